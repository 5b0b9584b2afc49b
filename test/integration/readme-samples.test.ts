/**
 * Every ```ts sample of the README runs, as written, against a real etcd, as its
 * own process, and ends on its own (test/unit/readme.test.ts type-checks them).
 *
 * What the test adds, and nothing else:
 * - `etcd-service-registry` (and `/grpc`) is imported from lib/, `@grpc/grpc-js` from node_modules
 *   (the import paths are rewritten);
 * - the environment: REGISTRY_ETCD_ENDPOINTS of the test etcd and a unique
 *   REGISTRY_KEY_PREFIX (a sample that sets its own prefix keeps it);
 * - the services the samples talk to: billing (two HTTP servers), sessions and
 *   carts, registered under that prefix from this process;
 * - a sample that continues an earlier one (uses `registry` without creating
 *   it) gets `const registry = new Registry()` before and `await registry.close()`
 *   after it; the stand-ins for the reader's own code (userId, invoice,
 *   callBilling) are defined;
 * - the service sample (an HTTP server that registers itself) runs until it is
 *   registered, then gets SIGTERM, as from `docker stop`: it must deregister and exit;
 * - host paths of the security sample (/run/secrets/…, /etc/etcd-client/…) point
 *   at test files.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Registry } from '../../lib';
import { makeTestCerts, type TestCerts } from '../support/certs';
import { etcdEndpoints, eventually, uniquePrefix } from '../support/env';

const root = path.resolve(__dirname, '../..');
const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
const samples = Array.from(readme.matchAll(/```ts\n([\s\S]*?)```/g), (m) => ({
  code: m[1]!,
  line: readme.slice(0, m.index).split('\n').length + 1,
}));
const LIB = JSON.stringify(path.join(root, 'lib/index.ts'));
const GRPC = JSON.stringify(path.join(root, 'lib/grpc/index.ts'));
const GREETER = JSON.stringify(path.join(root, 'examples/grpc-greeter.ts'));
/** The samples run from a temporary folder, where bare package names do not resolve. */
const GRPC_JS = JSON.stringify(require.resolve('@grpc/grpc-js'));
const standIns: Record<string, string> = {
  userId: "const userId = 'user-42';",
  invoice: 'const invoice = { id: 42, total: 10 };',
  callBilling: 'async function callBilling(address: string): Promise<void> { void address; }',
};

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

describe('README samples run against a real etcd and end on their own', () => {
  const prefix = uniquePrefix('readme');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'readme-run-'));
  const servers: Server[] = [];
  let provider: Registry;
  let certs: TestCerts;
  let passwordFile: string;

  async function serve(): Promise<string> {
    const server = createServer((_req, res) => {
      res.setHeader('content-type', 'application/json');
      res.end('{"ok":true}');
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  beforeAll(async () => {
    provider = new Registry({ etcdEndpoints: etcdEndpoints(), keyPrefix: prefix, shutdownSignals: [], env: {} });
    for (const service of ['billing', 'billing', 'sessions', 'carts']) await provider.register({ service, address: await serve() });
    certs = await makeTestCerts();
    passwordFile = path.join(dir, 'etcd-password');
    writeFileSync(passwordFile, 'not-a-real-password\n');
  }, 60_000);

  afterAll(async () => {
    await provider?.close();
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    await certs?.remove();
    rmSync(dir, { recursive: true, force: true });
  });

  /** The sample as a runnable .mts file (see the module comment for what is added). */
  function program(code: string): string {
    let text = code
      .replaceAll("from 'etcd-service-registry'", `from ${LIB}`)
      .replaceAll("from 'etcd-service-registry/grpc'", `from ${GRPC}`)
      .replaceAll("from '@grpc/grpc-js'", `from ${GRPC_JS}`);
    // What the gRPC samples declare as the reader's own: the Greeter of examples/grpc-greeter.ts.
    text = text
      .replace(/^declare const greeterDefinition: .*;$/m, `import { greeterService as greeterDefinition } from ${GREETER};`)
      .replace(/^declare const greeterImplementation: .*;$/m, "const greeterImplementation = { sayHello: (call: { request: { name: string } }, done: (e: null, r: { message: string }) => void) => done(null, { message: `hello ${call.request.name}` }) };");
    text = text.replaceAll("'/run/secrets/etcd-password'", JSON.stringify(passwordFile)).replaceAll("'/etc/etcd-client/ca.crt'", JSON.stringify(certs.caCert));
    const defined = Object.entries(standIns)
      .filter(([name]) => new RegExp(`\\b${name}\\b`).test(code) && !new RegExp(`\\b(const|let|function) ${name}\\b`).test(code))
      .map(([, definition]) => definition);
    const continues = /\bregistry\b/.test(code) && !/\bconst registry\b/.test(code);
    const head = continues ? [`import { Registry as __Registry } from ${LIB};`, 'const registry = new __Registry();'] : [];
    const tail = continues ? ['await registry.close();'] : [];
    return [...head, ...defined, text, ...tail, 'export {};', ''].join('\n');
  }

  function run(file: string, env: Record<string, string>, untilReady?: (child: ReturnType<typeof spawn>) => Promise<void>): Promise<Run> {
    const inherited = Object.entries(process.env).filter(([name]) => !name.startsWith('REGISTRY_') && name !== 'DEBUG');
    const child = spawn(process.execPath, ['--import', 'tsx', file], {
      cwd: root,
      env: { ...Object.fromEntries(inherited), REGISTRY_ETCD_ENDPOINTS: etcdEndpoints(), REGISTRY_KEY_PREFIX: prefix, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out = { stdout: '', stderr: '' };
    child.stdout!.on('data', (b: Buffer) => (out.stdout += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (out.stderr += b.toString()));
    // Ending on its own: well within this, or it is killed and the test fails.
    const timer = setTimeout(() => child.kill('SIGKILL'), 25_000);
    void untilReady?.(child);
    return new Promise((resolve) =>
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, ...out });
      }),
    );
  }

  it('has the samples this test knows about', () => {
    expect(samples.length).toBeGreaterThanOrEqual(12);
  });

  it.each(samples.map((s, i) => [i, s.line] as const))('sample %i (README line %i) runs and exits 0', async (i) => {
    const { code } = samples[i]!;
    const file = path.join(dir, `sample-${i}.mts`);
    writeFileSync(file, program(code));
    const isService = /\.listen\(/.test(code) && /registry\.register\(\)/.test(code);
    if (!isService) {
      const result = await run(file, {});
      expect({ code: result.code, signal: result.signal, stderr: result.stderr }, result.stdout).toEqual({ code: 0, signal: null, stderr: '' });
      return;
    }
    // The service: registered, then SIGTERM deregisters it at once and the process ends.
    const port = Number((await serve()).split(':')[1]);
    await new Promise<void>((resolve) => servers.pop()!.close(() => resolve())); // a free port for the sample
    const etcd = new Etcd3({ hosts: etcdEndpoints().split(',') });
    try {
      const result = await run(file, { REGISTRY_SERVICE_NAME: 'sample-service', REGISTRY_SERVICE_PORT: String(port) }, async (child) => {
        await eventually(async () => expect(await etcd.getAll().prefix(`${prefix}/services/sample-service/`).keys()).toHaveLength(1), { timeout: 20_000 });
        child.kill('SIGTERM');
      });
      expect(result.stdout).toMatch(/^registered .*\/services\/sample-service\//m);
      expect(result.stderr).toBe('');
      expect(result.signal === 'SIGTERM' || result.code === 143 || result.code === 0, `${result.code} ${result.signal}`).toBe(true);
      expect(await etcd.getAll().prefix(`${prefix}/services/sample-service/`).keys()).toEqual([]);
    } finally {
      etcd.close();
    }
  }, 40_000);
});
