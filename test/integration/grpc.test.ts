/**
 * The grpc-js resolver (`etcd-service-registry/grpc`) against real grpc-js servers and clients
 * on loopback, on grpc-js 1.10 and 1.13 (the object listener) and 1.14 (the function listener):
 * calls spread round robin over the servers registered, follow every change, fail with
 * UNAVAILABLE naming the service when it has no endpoint (waitForReady waits for one), and a
 * bad target fails with a status that names it.
 */
import * as grpc14 from '@grpc/grpc-js';
import * as grpc10 from 'grpc-js-1-10';
import * as grpc13 from 'grpc-js-1-13';
import { afterEach, describe, expect, it } from 'vitest';
import { Registry, type Endpoint, type RegistryOptions } from '../../lib';
import { registerGrpcResolver, type GrpcJsLike, type GrpcResolverRegistration } from '../../lib/grpc';
import { etcdEndpoints, eventually, uniquePrefix } from '../support/env';

type Grpc = typeof grpc14;
const VERSIONS: [string, Grpc][] = [
  ['1.10', grpc10 as unknown as Grpc],
  ['1.13', grpc13 as unknown as Grpc],
  ['1.14', grpc14],
];

const json = {
  serialize: (value: unknown): Buffer => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer): never => JSON.parse(bytes.toString()) as never,
};
const definition = {
  whoAmI: {
    path: '/test.Echo/WhoAmI',
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
};

interface Reply {
  server: string;
}
type Call = (options?: { waitForReady?: boolean; deadlineMs?: number }) => Promise<Reply>;

describe.each(VERSIONS)('grpc-js %s through the registry resolver', (version, grpc) => {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  function registry(prefix: string, options: RegistryOptions = {}): Registry {
    const r = new Registry({ etcdEndpoints: etcdEndpoints(), keyPrefix: prefix, leaseSeconds: 5, shutdownSignals: [], env: {}, ...options });
    cleanups.push(() => r.close());
    return r;
  }

  function resolver(r: Registry, scheme: string): GrpcResolverRegistration {
    const registration = registerGrpcResolver(r, { scheme, grpc: grpc as unknown as GrpcJsLike });
    cleanups.push(() => registration.unregister());
    return registration;
  }

  /** A server on 127.0.0.1 that answers with its own address. */
  async function server(): Promise<{ address: string; stop: () => Promise<void> }> {
    const s = new grpc.Server();
    let address = '';
    s.addService(definition, { whoAmI: (_call: unknown, callback: (e: null, r: Reply) => void) => callback(null, { server: address }) });
    const port = await new Promise<number>((resolve, reject) =>
      s.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
    );
    address = `127.0.0.1:${port}`;
    const stop = (): Promise<void> => new Promise((resolve) => s.tryShutdown(() => resolve()));
    cleanups.push(() => s.forceShutdown());
    return { address, stop };
  }

  function client(target: string, options: Record<string, unknown> = {}): Call {
    const Client = grpc.makeGenericClientConstructor(definition, 'test.Echo');
    const c = new Client(target, grpc.credentials.createInsecure(), options) as unknown as {
      whoAmI(req: object, meta: grpc14.Metadata, opts: grpc14.CallOptions, cb: (e: grpc14.ServiceError | null, r?: Reply) => void): void;
      close(): void;
    };
    cleanups.push(() => c.close());
    return ({ waitForReady = false, deadlineMs = 5000 } = {}) =>
      new Promise((resolve, reject) =>
        // waitForReady is a Metadata option in grpc-js.
        c.whoAmI({}, new grpc.Metadata({ waitForReady }), { deadline: Date.now() + deadlineMs }, (e, r) => (e ? reject(e) : resolve(r!))),
      );
  }

  async function spread(call: Call, n: number): Promise<Map<string, number>> {
    const counts = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const { server: s } = await call();
      counts.set(s, (counts.get(s) ?? 0) + 1);
    }
    return counts;
  }

  const scheme = (name: string): string => `etcd-${name}-${version.replace('.', '-')}`;

  it('spreads calls over the registered servers and follows registrations and removals', async () => {
    const prefix = uniquePrefix('grpc-rr');
    const [a, b, c] = [await server(), await server(), await server()];
    const servers = registry(prefix);
    await servers.register({ service: 'echo', address: a.address });
    await servers.register({ service: 'echo', address: b.address });
    const r = registry(prefix);
    const { scheme: s } = resolver(r, scheme('rr'));
    const call = client(`${s}:///echo`);

    // Both connected (round robin picks among the ready ones), then strictly alternating.
    await eventually(async () => expect([...(await spread(call, 10)).keys()].sort()).toEqual([a.address, b.address].sort()));
    const steady = await spread(call, 40);
    expect(steady.get(a.address)).toBe(20); // round robin, not pick_first
    expect(steady.get(b.address)).toBe(20);

    await servers.register({ service: 'echo', address: c.address });
    await eventually(async () => expect([...(await spread(call, 30)).keys()].sort()).toEqual([a.address, b.address, c.address].sort()));
    await servers.unregister({ service: 'echo', address: a.address });
    await eventually(async () => expect([...(await spread(call, 20)).keys()].sort()).toEqual([b.address, c.address].sort()));
  });

  it('a busy channel follows changes past the discovery idle time (its service stays subscribed while channels use it)', async () => {
    const prefix = uniquePrefix('grpc-idle');
    const [a, b] = [await server(), await server()];
    const servers = registry(prefix);
    await servers.register({ service: 'echo', address: a.address });
    // Idle after 1 s: nothing but the channel uses the service.
    const r = registry(prefix, { discoveryIdleSeconds: 1 });
    const { scheme: s } = resolver(r, scheme('idle'));
    const call = client(`${s}:///echo`);
    expect((await call()).server).toBe(a.address);
    const until = performance.now() + 2500; // past 1.5 × the idle time
    while (performance.now() < until) {
      await call();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await servers.register({ service: 'echo', address: b.address });
    await servers.unregister({ service: 'echo', address: a.address });
    await eventually(async () => expect([...(await spread(call, 10)).keys()]).toEqual([b.address]), { timeout: 5000 });
  });

  it('hands each change to grpc-js in the same tick as the change event, with metadata as endpoint attributes', async () => {
    const prefix = uniquePrefix('grpc-tick');
    const writer = registry(prefix);
    await writer.register({ service: 'echo', address: '10.0.0.1:80', metadata: { zone: 'a' } });
    const r = registry(prefix);
    const { scheme: s } = resolver(r, scheme('tick'));
    const seen: { endpoints: { addresses: unknown[]; attributes?: unknown }[]; serviceConfig: unknown }[] = [];
    // A listener of the shape this grpc-js release uses, through its own public createResolver.
    const record = (endpoints: { addresses: unknown[] }[], serviceConfig: unknown): void => void seen.push({ endpoints, serviceConfig });
    const listener =
      version === '1.14'
        ? (list: { ok: boolean; value?: { addresses: unknown[] }[] }, _a: unknown, config: { ok: boolean; value?: unknown } | null) => {
            record(list.value ?? [], config?.value ?? null);
            return true;
          }
        : { onSuccessfulResolution: (list: { addresses: unknown[] }[], config: unknown) => record(list, config), onError: () => undefined };
    const uri = { scheme: s, authority: '', path: 'echo' };
    const res = (grpc.experimental.createResolver as (...args: unknown[]) => { updateResolution(): void; destroy(): void })(uri, listener, {});
    cleanups.push(() => res.destroy());
    res.updateResolution();
    await eventually(() => expect(seen.length).toBeGreaterThan(0));
    expect(seen.at(-1)!.endpoints).toEqual([{ addresses: [{ host: '10.0.0.1', port: 80 }], attributes: { zone: 'a' } }]);
    expect(seen.at(-1)!.serviceConfig).toEqual({ loadBalancingConfig: [{ round_robin: {} }], methodConfig: [] });

    // A 'change' listener added after the resolver's runs after it, in the same emit.
    const inTheSameTick: boolean[] = [];
    r.on('change', ({ endpoints }) => {
      const last = seen.at(-1)!.endpoints;
      inTheSameTick.push(last.length === endpoints.length);
    });
    const before = seen.length;
    await writer.register({ service: 'echo', address: '[::1]:81' });
    await eventually(() => expect(inTheSameTick).toEqual([true]));
    expect(seen.length).toBe(before + 1);
    expect(seen.at(-1)!.endpoints.map((e) => e.addresses[0])).toEqual(expect.arrayContaining([{ host: '::1', port: 81 }, { host: '10.0.0.1', port: 80 }]));

    // A channel that sets its own service config keeps it: the resolver gives none.
    const own: unknown[] = [];
    const ownListener =
      version === '1.14'
        ? (_l: unknown, _a: unknown, config: unknown) => {
            own.push(config);
            return true;
          }
        : { onSuccessfulResolution: (_l: unknown, config: unknown) => void own.push(config), onError: () => undefined };
    const res2 = (grpc.experimental.createResolver as (...args: unknown[]) => { updateResolution(): void; destroy(): void })(uri, ownListener, {
      'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ pick_first: {} }] }),
    });
    cleanups.push(() => res2.destroy());
    res2.updateResolution();
    await eventually(() => expect(own).toEqual([null]));
  });

  it('a service with no endpoints fails fast with UNAVAILABLE naming it; waitForReady waits for one; an emptied service fails again', async () => {
    const prefix = uniquePrefix('grpc-empty');
    const r = registry(prefix);
    const { scheme: s } = resolver(r, scheme('empty'));
    const call = client(`${s}:///echo`);
    const started = Date.now();
    const error = (await call().catch((e: unknown) => e)) as grpc14.ServiceError;
    expect(error.code).toBe(grpc.status.UNAVAILABLE);
    expect(error.details).toMatch(/service "echo"/);
    expect(Date.now() - started).toBeLessThan(2000); // not the 5 s deadline

    const waiting = call({ waitForReady: true, deadlineMs: 10_000 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const a = await server();
    const writer = registry(prefix);
    await writer.register({ service: 'echo', address: a.address });
    expect((await waiting).server).toBe(a.address);

    await writer.unregister({ service: 'echo', address: a.address });
    await eventually(async () => {
      const e = (await call().catch((x: unknown) => x)) as grpc14.ServiceError;
      expect(e.code).toBe(grpc.status.UNAVAILABLE);
      expect(e.details).toMatch(/service "echo"/);
    });
  });

  it("a channel with its own round_robin service config stops calling a server whose registration went (the emptied list reaches grpc-js)", async () => {
    const prefix = uniquePrefix('grpc-own-empty');
    const a = await server(); // keeps running: only its registration goes
    const writer = registry(prefix);
    await writer.register({ service: 'echo', address: a.address });
    const r = registry(prefix);
    const { scheme: s } = resolver(r, scheme('own-empty'));
    const call = client(`${s}:///echo`, { 'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }) });
    expect((await call()).server).toBe(a.address);
    await writer.unregister({ service: 'echo', address: a.address });
    await eventually(async () => {
      const e = (await call({ deadlineMs: 1000 }).catch((x: unknown) => x)) as grpc14.ServiceError;
      expect(e.code).toBe(grpc.status.UNAVAILABLE);
    });
  });

  it('a bad target fails the channel with a status that names it', async () => {
    const r = registry(uniquePrefix('grpc-bad'));
    const { scheme: s } = resolver(r, scheme('bad'));
    for (const [target, pattern] of [
      [`${s}:///bad name`, /target ".*bad name" is invalid: the service name "bad name" is invalid/],
      [`${s}://etcd.example:2379/echo`, /names an authority/],
    ] as const) {
      const error = (await client(target)().catch((e: unknown) => e)) as grpc14.ServiceError;
      expect(error.code, target).toBe(grpc.status.UNAVAILABLE);
      expect(error.details, target).toMatch(pattern);
    }
  });

  it('a channel made before unregister() keeps its last list, also once it went idle and grpc-js asks its resolver again', async () => {
    const prefix = uniquePrefix('grpc-idle');
    const a = await server();
    await registry(prefix).register({ service: 'echo', address: a.address });
    const registration = resolver(registry(prefix), scheme('idle'));
    // Idle after 1 s without a call (grpc-js's least): its resolver destroyed, made to resolve again by the next call.
    const call = client(`${registration.scheme}:///echo`, { 'grpc.client_idle_timeout_ms': 1000 });
    expect((await call()).server).toBe(a.address);
    registration.unregister();
    await new Promise((resolve) => setTimeout(resolve, 2500));
    expect((await call()).server).toBe(a.address);
  });

  it('unregister() lets no new channel resolve; a scheme is held by one registration at a time', async () => {
    const prefix = uniquePrefix('grpc-unreg');
    const r = registry(prefix);
    const s = scheme('unreg');
    const registration = resolver(r, s);
    expect(() => registerGrpcResolver(r, { scheme: s, grpc: grpc as unknown as GrpcJsLike })).toThrow(/already registered/);
    registration.unregister();
    const error = (await client(`${s}:///echo`)().catch((e: unknown) => e)) as grpc14.ServiceError;
    expect(error.code).toBe(grpc.status.UNAVAILABLE);
    expect(error.details).toMatch(/unregistered/);
    // Registered again (with `using`, disposed at the end of the block): resolves.
    const a = await server();
    await registry(prefix).register({ service: 'echo', address: a.address });
    {
      using again = registerGrpcResolver(r, { scheme: s, grpc: grpc as unknown as GrpcJsLike });
      expect(again.scheme).toBe(s);
      expect((await client(`${s}:///echo`)()).server).toBe(a.address);
    }
    expect(() => registerGrpcResolver(r, { scheme: 'dns' })).toThrow(/grpc-js's own/);
    expect(() => registerGrpcResolver(r, { scheme: 'bad scheme' })).toThrow(/options.scheme "bad scheme" is invalid/);
  });
});

describe('registerGrpcResolver() defaults', () => {
  it("registers scheme 'etcd-registry' with the @grpc/grpc-js this package resolves", async () => {
    const prefix = uniquePrefix('grpc-default');
    const r = new Registry({ etcdEndpoints: etcdEndpoints(), keyPrefix: prefix, shutdownSignals: [], env: {} });
    const s = new grpc14.Server();
    s.addService(definition, { whoAmI: (_c: unknown, cb: (e: null, r: Reply) => void) => cb(null, { server: 'default' }) });
    const port = await new Promise<number>((resolve, reject) => s.bindAsync('127.0.0.1:0', grpc14.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
    await r.register({ service: 'echo', address: `127.0.0.1:${port}` });
    const registration = registerGrpcResolver(r);
    const Client = grpc14.makeGenericClientConstructor(definition, 'test.Echo');
    const c = new Client('etcd-registry:///echo', grpc14.credentials.createInsecure());
    try {
      expect(registration.scheme).toBe('etcd-registry');
      const reply = await new Promise<Reply>((resolve, reject) =>
        (c as unknown as Record<string, (...a: unknown[]) => void>).whoAmI!({}, { deadline: Date.now() + 5000 }, (e: Error | null, x: Reply) => (e ? reject(e) : resolve(x))),
      );
      expect(reply.server).toBe('default');
      expect(c.getChannel().getTarget()).toBe('etcd-registry:///echo');
    } finally {
      c.close();
      registration.unregister();
      s.forceShutdown();
      await r.close();
    }
  });
});

// Endpoint is part of the public API the resolver reads; keep the import used for type checks.
export type { Endpoint };
