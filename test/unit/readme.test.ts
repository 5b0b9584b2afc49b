/**
 * The README is the front door: every TypeScript sample in it must compile
 * against the real API. Each ```ts block is type-checked as its own ES module,
 * with `etcd-service-registry` mapped to lib/ (and `etcd-service-registry/grpc` to lib/grpc/).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '../..');
const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
const blocks = Array.from(readme.matchAll(/```ts\n([\s\S]*?)```/g), (m) => m[1]!);
/** Names the samples use as stand-ins for the reader's own code, declared where a sample uses but does not define them. */
const standIns: Record<string, string> = {
  userId: 'declare const userId: string;',
  invoice: 'declare const invoice: unknown;',
  callBilling: 'declare function callBilling(address: string): Promise<void>;',
};
const prelude = (code: string): string =>
  Object.entries(standIns)
    .filter(([name]) => new RegExp(`\\b${name}\\b`).test(code) && !new RegExp(`\\b(const|let|function) ${name}\\b`).test(code))
    .map(([, declaration]) => declaration)
    .concat('export {};')
    .join('\n');
/** A sample that uses a registry without creating one continues an earlier sample that did. */
const continuation = `import type { Registry as __Registry } from 'etcd-service-registry';\ndeclare const registry: __Registry;\n`;
const dir = mkdtempSync(path.join(os.tmpdir(), 'readme-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('README samples', () => {
  it('has TypeScript samples', () => {
    expect(blocks.length).toBeGreaterThan(10);
  });

  it('every ```ts block type-checks against lib/', () => {
    const files = blocks.map((code, i) => {
      const file = path.join(dir, `sample-${i}.mts`);
      const continues = /\bregistry\b/.test(code) && !/\bconst registry\b/.test(code);
      writeFileSync(file, `${continues ? continuation : ''}${code}\n${prelude(code)}\n`);
      return file;
    });
    const program = ts.createProgram(files, {
      target: ts.ScriptTarget.ES2022,
      lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
      module: ts.ModuleKind.Node16,
      moduleResolution: ts.ModuleResolutionKind.Node16,
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      types: ['node'],
      typeRoots: [path.join(root, 'node_modules/@types')],
      baseUrl: root,
      paths: {
        'etcd-service-registry': [path.join(root, 'lib/index.ts')],
        'etcd-service-registry/grpc': [path.join(root, 'lib/grpc/index.ts')],
        // The samples live in a temporary directory: resolve the peer dependency from here.
        '@grpc/grpc-js': [path.join(root, 'node_modules/@grpc/grpc-js/build/src/index.d.ts')],
      },
    });
    const errors = ts.getPreEmitDiagnostics(program).map((d) => {
      const where = d.file ? `${path.basename(d.file.fileName)}:${d.file.getLineAndCharacterOfPosition(d.start ?? 0).line + 1}` : '';
      return `${where} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    });
    expect(errors).toEqual([]);
  }, 30_000); // a whole type-check: ~4 s alone, more beside the other unit files on 2 cores
});
