// Writes an ES module entry beside each CommonJS entry point (dist/index.mjs + .d.mts for
// the root export, dist/grpc/index.mjs + .d.mts for `etcd-service-registry/grpc`): each
// re-exports the CommonJS build by name, so `import` and `require` share one copy of the library.
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';

const require = createRequire(import.meta.url);
for (const entry of ['index', 'grpc/index']) {
  const names = Object.keys(require(`../dist/${entry}.js`)).filter((n) => n !== '__esModule' && n !== 'default');
  const lines = [
    "import cjs from './index.js';",
    ...names.map((n) => `export const ${n} = cjs.${n};`),
    'export default cjs;',
    '',
  ];
  writeFileSync(new URL(`../dist/${entry}.mjs`, import.meta.url), lines.join('\n'));
  // The default export (the whole CommonJS module) is declared too, so `import registry from` type-checks.
  writeFileSync(new URL(`../dist/${entry}.d.mts`, import.meta.url), "export * from './index.js';\nimport * as cjs from './index.js';\nexport default cjs;\n");
  console.log(`dist/${entry}.mjs re-exports ${names.length} names`);
}
