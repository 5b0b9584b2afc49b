/**
 * The acceptance test of the grpc-js resolver: two gRPC servers (examples/grpc-service.ts, each a
 * real child process registered through the library with REGISTRY_DRAIN_SECONDS=1) and a client
 * in this process looping unary calls through `etcd-registry:///greeter`. Calls spread over both;
 * SIGTERM to one: zero calls fail and the rest go to the other; a new one comes up: calls spread
 * again. Run with a client of each listener shape (grpc-js 1.13 and 1.14).
 */
import * as grpc14 from '@grpc/grpc-js';
import * as grpc13 from 'grpc-js-1-13';
import { afterEach, describe, expect, it } from 'vitest';
import { Registry } from '../../lib';
import { registerGrpcResolver, type GrpcJsLike } from '../../lib/grpc';
import { greeterService, type HelloReply } from '../../examples/grpc-greeter';
import { spawnFixture, type Child } from '../support/child';
import { etcdEndpoints, eventually, uniquePrefix } from '../support/env';

type Grpc = typeof grpc14;

describe.each([
  ['1.13', grpc13 as unknown as Grpc],
  ['1.14', grpc14],
])('SIGTERM to one of two gRPC servers, grpc-js %s client', (version, grpc) => {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  function server(prefix: string): Child {
    const child = spawnFixture('../../examples/grpc-service.ts', {
      REGISTRY_ETCD_ENDPOINTS: etcdEndpoints(),
      REGISTRY_KEY_PREFIX: prefix,
      REGISTRY_SERVICE_NAME: 'greeter',
      REGISTRY_LEASE_SECONDS: '5',
      REGISTRY_DRAIN_SECONDS: '1',
    });
    cleanups.push(() => {
      if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
      return child.exited();
    });
    return child;
  }

  const served = async (child: Child): Promise<string> => (await child.line(/serving greeter at (\S+),/))[1]!;

  it('zero calls fail; the rest go to the other server; calls spread again when it comes back', async () => {
    const prefix = uniquePrefix(`grpc-drain-${version}`);
    const a = server(prefix);
    const b = server(prefix);
    const [addressA, addressB] = await Promise.all([served(a), served(b)]);

    const registry = new Registry({ etcdEndpoints: etcdEndpoints(), keyPrefix: prefix, shutdownSignals: [], env: {} });
    cleanups.push(() => registry.close());
    const resolver = registerGrpcResolver(registry, { scheme: `etcd-drain-${version.replace('.', '-')}`, grpc: grpc as unknown as GrpcJsLike });
    cleanups.push(() => resolver.unregister());
    const Client = grpc.makeGenericClientConstructor(greeterService, 'greeter.Greeter');
    const client = new Client(`${resolver.scheme}:///greeter`, grpc.credentials.createInsecure()) as unknown as {
      sayHello(req: object, opts: grpc14.CallOptions, cb: (e: grpc14.ServiceError | null, r?: HelloReply) => void): void;
      close(): void;
    };
    cleanups.push(() => client.close());

    // The loop: one call at a time, each recorded with the time it was answered.
    const calls: { at: number; server: string }[] = [];
    const failures: string[] = [];
    let running = true;
    const loop = (async () => {
      while (running) {
        await new Promise<void>((resolve) =>
          client.sayHello({ name: 'test' }, { deadline: Date.now() + 3000 }, (e, reply) => {
            if (e) failures.push(`${e.code} ${e.details}`);
            else calls.push({ at: Date.now(), server: reply!.server });
            resolve();
          }),
        );
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    })();
    cleanups.push(async () => {
      running = false;
      await loop;
    });
    const since = (t: number): Map<string, number> => {
      const counts = new Map<string, number>();
      for (const c of calls) if (c.at >= t) counts.set(c.server, (counts.get(c.server) ?? 0) + 1);
      return counts;
    };

    // 1. Spread over both.
    const start = Date.now();
    await eventually(() => expect([...since(start).keys()].sort()).toEqual([addressA, addressB].sort()));
    await eventually(() => {
      const counts = since(start);
      expect(counts.get(addressA)).toBeGreaterThan(20);
      expect(counts.get(addressB)).toBeGreaterThan(20);
    });

    // 2. SIGTERM to A: it deregisters at once and keeps serving for 1 s while the client moves.
    const term = Date.now();
    a.process.kill('SIGTERM');
    const exit = await a.exited();
    const exitedAt = Date.now();
    expect(exit.signal ?? exit.code).toBeTruthy(); // it did end (killed by the re-raised SIGTERM)
    expect(exitedAt - term).toBeGreaterThanOrEqual(1000); // the drain
    const lastToA = Math.max(...calls.filter((c) => c.server === addressA).map((c) => c.at));
    expect(lastToA - term).toBeLessThan(500); // moved within milliseconds, long before A ended
    await eventually(() => expect(since(exitedAt).get(addressB)).toBeGreaterThan(50));
    expect([...since(term + 500).keys()]).toEqual([addressB]);
    expect(failures).toEqual([]);

    // 3. A new server comes up: spread again.
    const c = server(prefix);
    const addressC = await served(c);
    const back = Date.now();
    await eventually(() => {
      const counts = since(back);
      expect(counts.get(addressC)).toBeGreaterThan(20);
      expect(counts.get(addressB)).toBeGreaterThan(20);
    });
    expect(failures).toEqual([]);
  }, 60_000);
});
