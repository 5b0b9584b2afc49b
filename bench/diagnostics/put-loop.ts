/**
 * The writer side of figure 1 in one process, for profiling (issue 17 item 2): register() and
 * unregister() in a loop, or the raw etcd3 put on a lease and delete, against an etcd of its own.
 *   npx tsx bench/diagnostics/put-loop.ts ours|raw [iterations=3000]
 *   node --cpu-prof --import tsx bench/diagnostics/put-loop.ts ours 5000
 * Prints wall time and CPU per operation, and the time from the call to the moment etcd3 hands
 * the request to grpc-js (the part of the latency that is ours before the request leaves).
 */
import { createRequire } from 'node:module';
import { Etcd3 } from 'etcd3';
import { Registry } from '../../lib';
import { encodeValue } from '../../lib/keys';
import { EtcdNode } from '../../test/support/etcd';

// When etcd3 hands a call to grpc-js (the channel creates it).
const grpc = createRequire(require.resolve('etcd3'))('@grpc/grpc-js') as typeof import('@grpc/grpc-js');
let handedAt = 0n;
const proto = grpc.Channel.prototype as unknown as { createCall: (...a: unknown[]) => unknown };
const original = proto.createCall;
proto.createCall = function (this: unknown, ...args: unknown[]) {
  if (handedAt === 0n) handedAt = process.hrtime.bigint();
  return original.apply(this, args);
};

async function main(): Promise<void> {
  const mode = process.argv[2] ?? 'ours';
  const n = Number(process.argv[3] ?? 3000);
  const etcd = new EtcdNode({ name: 'loop' });
  await etcd.start();
  const endpoint = etcd.clientUrl;
  const registry = new Registry({ etcdEndpoints: endpoint, keyPrefix: 'loop', leaseSeconds: 10, shutdownSignals: [], env: {} });
  const client = new Etcd3({ hosts: endpoint });
  const lease = await client.leaseClient.leaseGrant({ TTL: 600 });
  const addr = (i: number): string => `10.0.${(i >> 8) & 255}.${i & 255}:9000`;
  const toWire: number[] = [];
  const run = async (i: number): Promise<void> => {
    handedAt = 0n;
    const t0 = process.hrtime.bigint();
    if (mode === 'ours') await registry.register({ service: 'web', address: addr(i) });
    else await client.put(`loopraw/web/${addr(i)}`).value(encodeValue(addr(i), {})).lease(lease.ID);
    toWire.push(Number(handedAt - t0) / 1e3);
    if (mode === 'ours') await registry.unregister({ service: 'web', address: addr(i) });
    else await client.delete().key(`loopraw/web/${addr(i)}`);
  };
  for (let i = 0; i < 300; i++) await run(i);
  toWire.length = 0;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await run(1000 + (i % 5000));
  const t1 = process.hrtime.bigint();
  const c = process.cpuUsage(c0);
  toWire.sort((a, b) => a - b);
  const wire = toWire[Math.floor(toWire.length / 2)]!;
  process.stdout.write(
    `${mode}: ${(Number(t1 - t0) / 1e3 / n / 2).toFixed(1)} µs/op wall, ${((c.user + c.system) / n / 2).toFixed(1)} µs/op cpu, call → grpc-js p50 ${wire.toFixed(1)} µs\n`,
  );
  await registry.close();
  client.close();
  await etcd.stop();
}

void main();
