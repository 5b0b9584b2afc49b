// Writes dist/index.mjs and dist/index.d.mts: an ES module entry that re-exports
// the CommonJS build by name, so `import { Registry } from 'etcd-service-registry'`
// and `require('etcd-service-registry')` share one copy of the library.
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';

const require = createRequire(import.meta.url);
const names = Object.keys(require('../dist/index.js')).filter((n) => n !== '__esModule' && n !== 'default');
const lines = [
  "import cjs from './index.js';",
  ...names.map((n) => `export const ${n} = cjs.${n};`),
  'export default cjs;',
  '',
];
writeFileSync(new URL('../dist/index.mjs', import.meta.url), lines.join('\n'));
// The default export (the whole CommonJS module) is declared too, so `import registry from` type-checks.
writeFileSync(new URL('../dist/index.d.mts', import.meta.url), "export * from './index.js';\nimport * as cjs from './index.js';\nexport default cjs;\n");
console.log(`dist/index.mjs re-exports ${names.length} names`);
