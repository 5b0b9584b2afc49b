/** Shared pieces of the fault-injection suite: registries with short TTLs and end-state checks from an independent client. */
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, expect } from 'vitest';
import { Registry, type Endpoint, type RegistryOptions } from '../../lib';
import type { Connection } from '../../lib/etcd/connection';
import { EtcdNode } from '../support/etcd';
import { eventually } from '../support/env';

export const TTL = 2;

/** The registry's Connection (private): its generation, client, skipped members and 'reset' events. */
export function connectionOf(r: Registry): Connection {
  return (r as unknown as { conn: Connection }).conn;
}

export function faultRegistry(endpoints: string, prefix: string, options: RegistryOptions = {}): Registry {
  return new Registry({
    etcdEndpoints: endpoints,
    keyPrefix: prefix,
    leaseSeconds: TTL,
    shutdownSignals: [],
    connectTimeoutSeconds: 30,
    env: {},
    ...options,
  });
}

/** Every key under `$prefix/services/`, as an independent client sees it. */
export async function keysInEtcd(client: Etcd3, prefix: string): Promise<string[]> {
  const keys = await client.getAll().prefix(`${prefix}/services/`).keys();
  return keys.sort();
}

/**
 * The end state every fault test asserts: etcd holds exactly the `owned`
 * endpoints, each of them on its registry's live lease, and every watcher's
 * list of each service equals what etcd holds.
 */
export async function expectConverged(
  client: Etcd3,
  prefix: string,
  owned: readonly Endpoint[],
  watchers: readonly Registry[],
  timeout = 20_000,
): Promise<void> {
  // Several registries may own the same address: etcd holds it once.
  const expected = Array.from(new Set(owned.map((e) => e.key))).sort();
  const services = Array.from(new Set(owned.map((e) => e.service)));
  await eventually(
    async () => {
      expect(await keysInEtcd(client, prefix)).toEqual(expected);
      for (const watcher of watchers) {
        for (const service of services) {
          const inEtcd = (await client.getAll().prefix(`${prefix}/services/${service}/`).keys()).sort();
          const seen = (await watcher.endpoints(service)).map((e) => e.key).sort();
          expect(seen).toEqual(inEtcd);
        }
      }
    },
    { timeout, interval: 50 },
  );
}

/** Resolves with the ms from now until `registry` emits `event`. */
export function timeUntil(registry: Registry, event: 'reregistered' | 'lease-lost' | 'restored' | 'etcd-unreachable' | 'etcd-reachable' | 'resynced'): Promise<number> {
  const started = Date.now();
  return new Promise((resolve) => registry.once(event, () => resolve(Date.now() - started)));
}

export function measured(what: string, ms: number): void {
  // Collected into the README's "Failure behaviour" section.
  console.log(`[measure] ${what}: ${ms} ms`);
}

/** The range etcd counts unary reads under in its /metrics: the watchdog's reads among them. */
export const RANGE_REQUESTS = 'grpc_server_msg_received_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"}';

/** One sample of the /metrics of the etcd member at `clientUrl`, by its full name (labels included); NaN when absent. */
export async function etcdMetric(clientUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${clientUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return Number(line?.slice(name.length + 1));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface FaultNode {
  /** The node: its ports are known once it started (before the first test). */
  readonly etcd: EtcdNode;
  /** A raw etcd3 client on the node, for the independent view of etcd (from the first test on). */
  readonly client: Etcd3;
  /** faultRegistry() on the node (or on `endpoints`, e.g. a proxy in front of it), closed after the test. */
  reg(prefix: string, options?: RegistryOptions, endpoints?: string): Registry;
}

/**
 * One etcd node for the tests of a describe block: started before them, stopped after.
 * After each test it is resumed if paused and restarted if stopped, every registry of
 * reg() is closed, then `cleanup` runs (a proxy closed, a clock put back).
 */
export function useFaultNode(options: { cleanup?: () => void | Promise<void> } = {}): FaultNode {
  const etcd = new EtcdNode();
  let client: Etcd3 | undefined;
  const open: Registry[] = [];
  beforeAll(async () => {
    await etcd.start();
    client = new Etcd3({ hosts: etcd.clientUrl });
  });
  afterEach(async () => {
    if (etcd.isPaused) etcd.resume();
    if (!etcd.isRunning) await etcd.restart();
    await Promise.all(open.splice(0).map((r) => r.close()));
    await options.cleanup?.();
  });
  afterAll(async () => {
    client?.close();
    await etcd.stop();
  });
  return {
    etcd,
    get client(): Etcd3 {
      if (client === undefined) throw new Error('the fault node has not started yet (its client is there from the first test on)');
      return client;
    },
    reg(prefix: string, registryOptions: RegistryOptions = {}, endpoints = etcd.clientUrl): Registry {
      const r = faultRegistry(endpoints, prefix, registryOptions);
      open.push(r);
      return r;
    },
  };
}

/** The value etcd holds under the key, parsed, or undefined. */
export async function storedValue(client: Etcd3, key: string): Promise<{ Addr: string; Metadata: unknown } | undefined> {
  const raw = await client.get(key).string();
  return raw === null ? undefined : (JSON.parse(raw) as { Addr: string; Metadata: unknown });
}
