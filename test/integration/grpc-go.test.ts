/**
 * Interop with etcd's own Go naming code, offline: test/go/interop (endpoints.Manager,
 * NewWatchChannel, and etcd's gRPC resolver with grpc-go's round_robin) built in GOPATH mode
 * from Debian's golang-go and golang-etcd-server-dev (/usr/share/gocode).
 *
 * Skipped, saying why, where Go or that package is missing; with CI set it fails instead
 * (`apt-get install -y golang-go golang-etcd-server-dev`).
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Registry, encodeValue } from '../../lib';
import { greeterService, type HelloReply, type HelloRequest } from '../../examples/grpc-greeter';
import { etcdEndpoints, eventually, uniquePrefix } from '../support/env';

const run = promisify(execFile);
const root = path.resolve(__dirname, '../..');
const GOPATH = '/usr/share/gocode';
const ETCD_NAMING = path.join(GOPATH, 'src/go.etcd.io/etcd/clientv3/naming/resolver');
const goEnv = { ...process.env, GO111MODULE: 'off', GOPATH, GOPROXY: 'off', GOFLAGS: '', GOCACHE: path.join(os.tmpdir(), 'etcd-service-registry-go-cache') };

const hasGo = spawnSync('go', ['version'], { env: goEnv }).status === 0;
const missing = !hasGo ? 'no `go` on PATH' : !existsSync(ETCD_NAMING) ? `no ${ETCD_NAMING}` : undefined;
const why = `${missing}: apt-get install -y golang-go golang-etcd-server-dev`;

it.runIf(missing !== undefined && process.env.CI !== undefined)('Go interop needs its toolchain in CI', () => {
  throw new Error(`Go interop tests cannot run: ${why}`);
});

describe.skipIf(missing !== undefined)(`etcd's Go naming code against the library${missing ? ` (skipped: ${why})` : ''}`, () => {
  let dir: string;
  let binary: string;
  let etcd: Etcd3;
  const cleanups: (() => unknown)[] = [];

  beforeAll(async () => {
    // Built once per run into a temporary directory; Go's own cache (GOCACHE) makes later runs fast.
    dir = mkdtempSync(path.join(os.tmpdir(), 'esr-go-'));
    binary = path.join(dir, 'interop');
    await run('go', ['build', '-o', binary, './test/go/interop'], { cwd: root, env: goEnv });
    etcd = new Etcd3({ hosts: etcdEndpoints().split(',') });
  }, 300_000);
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  afterAll(() => {
    etcd?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const go = async (...args: string[]): Promise<string> => (await run(binary, args, { timeout: 60_000 })).stdout;

  function registry(prefix: string): Registry {
    const r = new Registry({ etcdEndpoints: etcdEndpoints(), keyPrefix: prefix, leaseSeconds: 5, shutdownSignals: [], env: {} });
    cleanups.push(() => r.close());
    return r;
  }

  /** A Node gRPC server of the Greeter service on 127.0.0.1. */
  async function greeter(): Promise<string> {
    const server = new grpc.Server();
    let address = '';
    server.addService(greeterService, {
      sayHello: (call: grpc.ServerUnaryCall<HelloRequest, HelloReply>, cb: grpc.sendUnaryData<HelloReply>) => cb(null, { message: `hello ${call.request.name}`, server: address }),
    });
    const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    address = `127.0.0.1:${port}`;
    cleanups.push(() => server.forceShutdown());
    return address;
  }

  /** `interop watch`: its stdout lines as they come. */
  function watch(target: string): { lines: string[]; child: ChildProcess } {
    const child = spawn(binary, ['watch', etcdEndpoints(), target], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let rest = '';
    child.stdout!.on('data', (b: Buffer) => {
      const parts = (rest + b.toString()).split('\n');
      rest = parts.pop()!;
      lines.push(...parts);
    });
    cleanups.push(() => child.kill('SIGKILL'));
    return { lines, child };
  }

  it("Go's endpoints.Manager registers: the library lists each endpoint with its metadata, and writes byte for byte what Go writes", async () => {
    const prefix = uniquePrefix('go-manager');
    const target = `${prefix}/services/greeter`;
    await go('add', etcdEndpoints(), target, `${target}/10.0.0.1:80`, '10.0.0.1:80', '{"weight":2,"zone":"a"}');
    await go('add', etcdEndpoints(), target, `${target}/10.0.0.2:80`, '10.0.0.2:80', 'null');
    await go('add', etcdEndpoints(), target, `${target}/10.0.0.3:80`, '10.0.0.3:80', '"v1"');
    await go('add', etcdEndpoints(), target, `${target}/unix:///tmp/greeter.sock`, 'unix:///tmp/greeter.sock', 'null');

    const r = registry(prefix);
    const invalid: string[] = [];
    r.on('invalid-endpoint', (e) => invalid.push(`${e.key}: ${e.reason}`));
    const list = [...(await r.endpoints('greeter'))].sort((x, y) => x.address.localeCompare(y.address));
    expect(list).toEqual([
      { service: 'greeter', address: '10.0.0.1:80', metadata: { weight: 2, zone: 'a' }, key: `${target}/10.0.0.1:80` },
      { service: 'greeter', address: '10.0.0.2:80', metadata: {}, key: `${target}/10.0.0.2:80` },
      { service: 'greeter', address: '10.0.0.3:80', metadata: {}, nonObjectMetadata: 'v1', key: `${target}/10.0.0.3:80` },
      { service: 'greeter', address: 'unix:///tmp/greeter.sock', metadata: {}, key: `${target}/unix:///tmp/greeter.sock` },
    ]);
    expect(invalid).toEqual([]);

    // What Go wrote is what the library writes for the same endpoint (Go sorts an object's keys).
    expect(await etcd.get(`${target}/10.0.0.2:80`).string()).toBe(encodeValue('10.0.0.2:80', {}));
    expect(await etcd.get(`${target}/10.0.0.1:80`).string()).toBe(encodeValue('10.0.0.1:80', { weight: 2, zone: 'a' }));

    // A Go endpoint added while the library watches arrives through the watch.
    await go('add', etcdEndpoints(), target, `${target}/10.0.0.4:80`, '10.0.0.4:80', '{"late":true}');
    await eventually(async () => expect((await r.endpoints('greeter')).find((e) => e.address === '10.0.0.4:80')?.metadata).toEqual({ late: true }));
  });

  it("the library registers: Go's List and NewWatchChannel see it, and the delete on close()", async () => {
    const prefix = uniquePrefix('go-watch');
    const target = `${prefix}/services/greeter`;
    const { lines } = watch(target);
    await eventually(() => expect(lines).toContain('ready'), { timeout: 20_000 });

    const r = registry(prefix);
    const plain = await r.register({ service: 'greeter', address: '10.0.0.1:80' });
    const tagged = await r.register({ service: 'greeter', address: '10.0.0.2:80', metadata: { zone: 'b' } });
    await eventually(() => expect(lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l))).toEqual([
      { Op: 0, Key: plain.key, Addr: '10.0.0.1:80', Metadata: null },
      { Op: 0, Key: tagged.key, Addr: '10.0.0.2:80', Metadata: { zone: 'b' } },
    ]));
    expect(JSON.parse(await go('list', etcdEndpoints(), target))).toEqual({
      [plain.key]: { Addr: '10.0.0.1:80', Metadata: null },
      [tagged.key]: { Addr: '10.0.0.2:80', Metadata: { zone: 'b' } },
    });

    await r.close();
    await eventually(() => {
      const deletes = lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { Op: number; Key: string }).filter((u) => u.Op === 1);
      expect(deletes.map((u) => u.Key).sort()).toEqual([plain.key, tagged.key].sort());
    });
  });

  it("a Go gRPC client with etcd's resolver and round_robin calls the Node gRPC servers the library registered (with grpc.WithAuthority)", async () => {
    const prefix = uniquePrefix('go-client');
    const target = `${prefix}/services/greeter`;
    const [a, b] = [await greeter(), await greeter()];
    const r = registry(prefix);
    await r.register({ service: 'greeter', address: a });
    await r.register({ service: 'greeter', address: b });

    const replies = (await go('call', etcdEndpoints(), target, 'greeter', '40')).trim().split('\n').map((l) => JSON.parse(l) as HelloReply);
    expect(replies).toHaveLength(40);
    expect(new Set(replies.map((x) => x.message))).toEqual(new Set(['hello go']));
    const counts = new Map<string, number>();
    for (const x of replies) counts.set(x.server, (counts.get(x.server) ?? 0) + 1);
    expect([...counts.keys()].sort()).toEqual([a, b].sort());
    for (const n of counts.values()) expect(n).toBeGreaterThanOrEqual(10);
  }, 60_000);

  it('why: Metadata {} crashes that Go client, and without grpc.WithAuthority Node resets the stream', async () => {
    const prefix = uniquePrefix('go-crash');
    const target = `${prefix}/services/greeter`;
    const a = await greeter();
    // What the library wrote before: an empty object. etcd's resolver (3.5.0–3.5.26) puts it in
    // the address's Metadata and round_robin hashes it.
    await etcd.put(`${target}/${a}`).value(JSON.stringify({ Op: 0, Addr: a, Metadata: {} }));
    const crash = await run(binary, ['call', etcdEndpoints(), target, 'greeter', '1'], { timeout: 60_000 }).catch((e: { code?: number; stderr?: string }) => e);
    expect((crash as { code?: number }).code).not.toBe(0);
    expect((crash as { stderr: string }).stderr).toMatch(/hash of unhashable type map\[string\]interface \{\}/);

    await etcd.put(`${target}/${a}`).value(encodeValue(a, {}));
    expect(JSON.parse(await go('call', etcdEndpoints(), target, 'greeter', '1'))).toMatchObject({ server: a });
    const noAuthority = await run(binary, ['call', etcdEndpoints(), target, '', '1'], { timeout: 60_000 }).catch((e: { code?: number; stderr?: string }) => e);
    expect((noAuthority as { code?: number }).code).toBe(2);
    expect((noAuthority as { stderr: string }).stderr).toMatch(/call 0: rpc error: code = Internal desc = stream terminated by RST_STREAM with error code: PROTOCOL_ERROR/);
  }, 60_000);
});
