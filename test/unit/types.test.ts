/**
 * The public types say what the code does: the `error` event carries a
 * RegistryError (`e.code` compiles), a change event has `updated`, a
 * Subscription is exported, pick() options are `PickerOptions` and the pickers'
 * construction options another name, describeConfig() is exported as the README says.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';

const root = path.resolve(__dirname, '../..');
const dir = mkdtempSync(path.join(os.tmpdir(), 'types-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SNIPPET = `
import { Registry, Subscription, describeConfig, type ChangeEvent, type PickerOptions, type RegistryErrorCode } from 'etcd-service-registry';
import type { CreatePickerOptions } from '${path.join(root, 'lib/pickers/index.ts')}';

declare const registry: Registry;
registry.on('error', (e) => {
  const code: RegistryErrorCode = e.code;
  void code;
});
registry.on('change', (event: ChangeEvent) => {
  const updated: readonly { key: string }[] = event.updated;
  void [event.added, event.removed, updated];
});
const options: PickerOptions = { strategy: 'consistent-hash', key: 'user-1' };
const construction: CreatePickerOptions = { random: Math.random };
async function use(): Promise<void> {
  const sub: Subscription = await registry.subscribe('billing');
  sub.on('change', (e) => void e.updated);
  sub.pick(options);
  void sub.endpoints.length;
  await sub.close();
  await using disposed = await registry.subscribe('billing');
  void disposed;
}
void [use, construction, describeConfig(registry.config)];
export {};
`;

describe('public types', () => {
  it('type-check the way the README describes them', () => {
    const file = path.join(dir, 'types.mts');
    writeFileSync(file, SNIPPET);
    const program = ts.createProgram([file], {
      target: ts.ScriptTarget.ES2022,
      lib: ['lib.es2022.d.ts', 'lib.esnext.disposable.d.ts'],
      module: ts.ModuleKind.Node16,
      moduleResolution: ts.ModuleResolutionKind.Node16,
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      allowImportingTsExtensions: true,
      types: ['node'],
      typeRoots: [path.join(root, 'node_modules/@types')],
      baseUrl: root,
      paths: { 'etcd-service-registry': [path.join(root, 'lib/index.ts')] },
    });
    const errors = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    expect(errors).toEqual([]);
  }, 30_000);
});
