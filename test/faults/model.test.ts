/**
 * A seeded, replayable model-based test of registration against a real etcd.
 *
 * A script of operations is generated from the seed alone (MODEL_SEED=n replays
 * it; MODEL_OPS sets its length): register() (not awaited, random metadata,
 * random small gaps so calls on one key overlap), unregister(), close() of a
 * registrar (called 1–3 times at once; the slot then gets a new registrar), an
 * etcd pause (SIGSTOP, shorter or longer than the TTL), an etcd kill and restart
 * (a member's, in the cluster), and once per run a child process whose own
 * SIGTERM handler is `await registry.close(); process.exit(0)`. Only the timing
 * is real: how the script meets etcd's state is not replayable, the script is.
 *
 * Every call's outcome is recorded as it settles, and the model applies the
 * contract of lib/publish/ to them:
 * - once everything settles, a key holds what the LAST call asked for;
 * - a rejected register() has no effect: the key falls back to what the calls
 *   before it asked for (a failed update never removes a healthy endpoint);
 * - an unregister() that gives up (timeout) still deletes in the background;
 *   one etcd refused has no effect, as a refused register();
 * - unregister() of a key the registry does not own rejects with
 *   ERR_NOT_REGISTERED at once (checked against the model's prediction);
 * - a register() rejecting with ERR_NOT_REGISTERED was superseded by an unregister;
 * - right after close() resolves (and right after the child exits) none of that
 *   registry's keys are in etcd.
 * After quiescence (faults lifted, every call settled) etcd must hold exactly
 * what the model says, each key on its registrar's current lease, and every
 * watcher's list (endpoints(service) and services()) must equal etcd's.
 *
 * A key is used by one registrar at a time (two registrars writing one key race
 * each other by design): an operation on a key another slot holds goes to that
 * slot instead.
 */
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Registry, encodeValue } from '../../lib';
import { spawnFixture, type Child } from '../support/child';
import { EtcdCluster, EtcdNode } from '../support/etcd';
import { eventually, uniquePrefix } from '../support/env';
import { standingRegister } from '../support/model-contract';
import { seededRandom } from '../support/random';
import { TTL, faultRegistry, sleep } from './support';

const SEED = Number(process.env.MODEL_SEED ?? Date.now() % 1_000_000);
const OPS = Number(process.env.MODEL_OPS ?? 60);
const SLOTS = 3;
const SERVICES = ['alpha', 'beta'] as const;
const ADDRESSES = ['10.1.0.1:80', '10.1.0.2:80', '10.1.0.3:80'] as const;
const KEYS = SERVICES.flatMap((service) => ADDRESSES.map((address) => ({ service, address })));
/** The child's endpoints: addresses the registrars never use. */
const CHILD_ENDPOINTS = [
  { service: 'alpha', address: '10.1.9.1:80', metadata: { child: true } },
  { service: 'beta', address: '10.1.9.2:80', metadata: { child: true } },
];

// ---- the script: a pure function of the seed ---------------------------------------

type Op =
  | { t: 'register'; slot: number; key: number; metadata: Record<string, unknown>; gap: number }
  | { t: 'unregister'; slot: number; key: number; gap: number }
  | { t: 'pause'; member: number; ms: number; gap: number }
  | { t: 'kill'; member: number; ms: number; gap: number }
  | { t: 'close'; slot: number; times: number; gap: number }
  | { t: 'sigterm'; gap: number }
  | { t: 'idle'; gap: number };

function script(seed: number, length: number, members: number): Op[] {
  const rand = seededRandom(seed);
  const int = (n: number): number => Math.floor(rand() * n);
  // Often no gap at all (calls overlap in one tick), else a short one.
  const gap = (): number => (rand() < 0.35 ? 0 : 5 + int(150));
  const ops: Op[] = [];
  const sigtermAt = Math.floor(length / 3) + int(Math.floor(length / 3));
  for (let i = 0; i < length; i++) {
    if (i === sigtermAt) {
      ops.push({ t: 'sigterm', gap: gap() });
      continue;
    }
    const r = rand();
    if (r < 0.5) {
      const metadata: Record<string, unknown> = { n: i };
      if (rand() < 0.5) metadata.zone = ['a', 'b', 'c'][int(3)];
      if (rand() < 0.2) metadata.weight = 1 + int(5);
      ops.push({ t: 'register', slot: int(SLOTS), key: int(KEYS.length), metadata, gap: gap() });
    } else if (r < 0.72) {
      ops.push({ t: 'unregister', slot: int(SLOTS), key: int(KEYS.length), gap: gap() });
    } else if (r < 0.8) {
      // Shorter than the TTL, or past it (the lease expires during the pause).
      const ms = rand() < 0.5 ? 300 + int(1200) : TTL * 1000 + 300 + int(1200);
      ops.push({ t: 'pause', member: int(members), ms, gap: gap() });
    } else if (r < 0.86) {
      ops.push({ t: 'kill', member: int(members), ms: 200 + int(2500), gap: gap() });
    } else if (r < 0.9) {
      ops.push({ t: 'close', slot: int(SLOTS), times: 1 + int(3), gap: gap() });
    } else {
      ops.push({ t: 'idle', gap: 200 + int(600) });
    }
  }
  return ops;
}

// ---- the model -------------------------------------------------------------------

interface Call {
  readonly op: number;
  readonly kind: 'register' | 'unregister';
  /** The value register() asked for. */
  readonly value?: string;
  state: 'pending' | 'resolved' | 'rejected';
  code?: string;
}

/** What the calls on one key of one registrar ask for (the contract: test/support/model-contract.ts). */
function intended(calls: readonly Call[]): string | undefined {
  return standingRegister(calls)?.value;
}

interface Slot {
  registry: Registry;
  generation: number;
  /** Calls per key index, in issue order. */
  calls: Map<number, Call[]>;
}

/** What the faults do: on one etcd node, or on a member of a cluster. */
interface Target {
  readonly endpoints: string;
  pause(member: number, ms: number): Promise<void>;
  kill(member: number, ms: number): Promise<void>;
  /** Every fault lifted. */
  heal(): Promise<void>;
}

interface Variant {
  name: string;
  salt: number;
  connectTimeoutSeconds: number;
  members: number;
}

function codeOf(e: unknown): string {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' ? code : `${(e as Error).name}: ${(e as Error).message}`;
}

/** The code, and the message when it is not one of the expected ones. */
function outcome(e: unknown): string {
  const code = codeOf(e);
  return ['ERR_NOT_REGISTERED', 'ERR_ETCD_UNREACHABLE', 'ERR_REGISTRY_CLOSED'].includes(code) ? code : `${code} (${(e as Error).message})`;
}

async function runModel(variant: Variant, target: Target, client: Etcd3): Promise<void> {
  const seed = SEED + variant.salt;
  const ops = script(seed, OPS, variant.members);
  const prefix = uniquePrefix(`model-${variant.name}`);
  const started = Date.now();
  const log: string[] = [];
  const note = (line: string): void => void log.push(`+${String(Date.now() - started).padStart(5)} ms ${line}`);
  const violations: string[] = [];
  const violation = (what: string): void => {
    violations.push(what);
    note(`VIOLATION ${what}`);
  };
  const counts: Record<string, number> = {};
  const count = (what: string): void => void (counts[what] = (counts[what] ?? 0) + 1);
  const open: Registry[] = [];
  const pending: Promise<unknown>[] = [];
  let child: Child | undefined;

  const newRegistrar = (): Registry => {
    const r = faultRegistry(target.endpoints, prefix, { connectTimeoutSeconds: variant.connectTimeoutSeconds });
    r.on('error', () => undefined); // background failures are retried; outcomes and the end state are what count
    open.push(r);
    return r;
  };
  const slots: Slot[] = Array.from({ length: SLOTS }, () => ({ registry: newRegistrar(), generation: 0, calls: new Map() }));
  const label = (s: number): string => `s${s}.${slots[s]!.generation}`;
  const keyName = (k: number): string => `${KEYS[k]!.service}/${KEYS[k]!.address}`;
  const callsOf = (s: number, k: number): Call[] => {
    const slot = slots[s]!;
    let list = slot.calls.get(k);
    if (!list) slot.calls.set(k, (list = []));
    return list;
  };
  const holds = (s: number, k: number): boolean => {
    const calls = slots[s]!.calls.get(k) ?? [];
    return calls.some((c) => c.state === 'pending') || intended(calls) !== undefined;
  };
  /** The slot that must run an operation on key k: the one holding it, if any. */
  const route = (s: number, k: number): number => {
    for (let o = 0; o < SLOTS; o++) if (o !== s && holds(o, k)) return o;
    return s;
  };

  const watchers = [faultRegistry(target.endpoints, prefix), faultRegistry(target.endpoints, prefix)];
  open.push(...watchers);
  for (const s of SERVICES) await watchers[0]!.endpoints(s);
  await watchers[1]!.services();

  child = spawnFixture('model-child.ts', {
    REGISTRY_ETCD_ENDPOINTS: target.endpoints,
    REGISTRY_KEY_PREFIX: prefix,
    REGISTRY_LEASE_SECONDS: String(TTL),
    MODEL_CHILD_ENDPOINTS: JSON.stringify(CHILD_ENDPOINTS),
    DEBUG: 'etcd-service-registry:*',
  });
  const childReady = child.line(/ready pid/, 60_000);
  childReady.catch(() => undefined);

  let fault: Promise<void> | undefined;
  const liftFault = async (): Promise<void> => {
    if (fault) await fault;
  };

  /** Every kv under the prefix's services, as an independent client sees it. */
  const etcdState = async (): Promise<Map<string, { value: string; lease: string }>> => {
    const res = await client.getAll().prefix(`${prefix}/services/`).exec();
    return new Map(res.kvs.map((kv) => [kv.key.toString(), { value: kv.value.toString(), lease: String(kv.lease) }]));
  };
  const keyOf = (k: number): string => `${prefix}/services/${KEYS[k]!.service}/${KEYS[k]!.address}`;

  for (const [i, op] of ops.entries()) {
    if (op.t === 'register' || op.t === 'unregister') {
      const s = route(op.slot, op.key);
      const { registry } = slots[s]!;
      const calls = callsOf(s, op.key);
      const { service, address } = KEYS[op.key]!;
      const who = `#${i} ${op.t} ${label(s)} ${keyName(op.key)}`;
      const t0 = Date.now();
      if (op.t === 'register') {
        const call: Call = { op: i, kind: 'register', value: encodeValue(address, op.metadata), state: 'pending' };
        calls.push(call);
        note(`${who} ${JSON.stringify(op.metadata)}`);
        const p = registry.register({ service, address, metadata: op.metadata }).then(
          () => {
            call.state = 'resolved';
            count('register resolved');
            note(`${who} resolved after ${Date.now() - t0} ms`);
          },
          (e: unknown) => {
            call.state = 'rejected';
            call.code = codeOf(e);
            count(`register ${call.code}`);
            if (!['ERR_NOT_REGISTERED', 'ERR_ETCD_UNREACHABLE', 'ERR_REGISTRY_CLOSED'].includes(call.code)) console.log(`[model] ${who}: ${outcome(e)}`);
            note(`${who} rejected after ${Date.now() - t0} ms: ${outcome(e)}`);
            // Superseded by an unregister issued after it, on the same registrar.
            if (call.code === 'ERR_NOT_REGISTERED' && !calls.some((c) => c.op > i && c.kind === 'unregister')) {
              violation(`${who} rejected with ERR_NOT_REGISTERED, but no unregister() of the key came after it`);
            }
          },
        );
        pending.push(p);
      } else {
        const owned = intended(calls) !== undefined;
        const call: Call = { op: i, kind: 'unregister', state: 'pending' };
        calls.push(call);
        note(`${who} (model: ${owned ? 'owned' : 'not owned'})`);
        let settledAt = 0;
        const p = registry.unregister({ service, address }).then(
          () => {
            settledAt = Date.now();
            call.state = 'resolved';
            count('unregister resolved');
            note(`${who} resolved after ${Date.now() - t0} ms`);
          },
          (e: unknown) => {
            settledAt = Date.now();
            call.state = 'rejected';
            call.code = codeOf(e);
            count(`unregister ${call.code}`);
            note(`${who} rejected after ${Date.now() - t0} ms: ${outcome(e)}`);
            if (!['ERR_NOT_REGISTERED', 'ERR_ETCD_UNREACHABLE'].includes(call.code)) console.log(`[model] ${who}: ${outcome(e)}`);
          },
        );
        pending.push(p);
        // "At once": before any I/O callback runs.
        await new Promise<void>((resolve) => setImmediate(resolve));
        const atOnce = settledAt !== 0 && call.code === 'ERR_NOT_REGISTERED';
        if (owned && call.code === 'ERR_NOT_REGISTERED') violation(`${who}: the model owns the key, yet unregister() rejected with ERR_NOT_REGISTERED`);
        if (!owned && !atOnce) {
          await p;
          violation(`${who}: the model does not own the key, yet unregister() did not reject with ERR_NOT_REGISTERED at once (${call.state} ${call.code ?? ''})`);
        }
      }
    } else if (op.t === 'pause' || op.t === 'kill') {
      if (fault) {
        note(`#${i} ${op.t} skipped: a fault is on`);
      } else {
        count(op.t);
        note(`#${i} ${op.t} member ${op.member} for ${op.ms} ms`);
        fault = (op.t === 'pause' ? target.pause(op.member, op.ms) : target.kill(op.member, op.ms)).then(() => {
          note(`#${i} ${op.t} lifted`);
          fault = undefined;
        });
      }
    } else if (op.t === 'close') {
      await liftFault();
      const slot = slots[op.slot]!;
      const old = slot.registry;
      const held = KEYS.map((_, k) => k).filter((k) => holds(op.slot, k));
      const lease = old.leaseId;
      const who = `#${i} close ${label(op.slot)} ×${op.times}`;
      note(`${who} (holding ${held.map(keyName).join(', ') || 'nothing'}; lease ${lease})`);
      // Its replacement starts empty; the closing one's calls settle (rejected) as it closes.
      slot.registry = newRegistrar();
      slot.generation++;
      slot.calls = new Map();
      const t0 = Date.now();
      await Promise.all(Array.from({ length: op.times }, () => old.close()));
      const left = await etcdState();
      note(`${who} resolved after ${Date.now() - t0} ms`);
      count('close');
      for (const k of held) if (left.has(keyOf(k))) violation(`${who}: ${keyName(k)} still in etcd right after close() resolved`);
      for (const [key, kv] of left) if (lease !== undefined && kv.lease === lease) violation(`${who}: ${key} still on the closed registry's lease ${lease}`);
    } else if (op.t === 'sigterm') {
      await liftFault();
      const who = `#${i} SIGTERM to the child`;
      try {
        await childReady;
        const childKeys = CHILD_ENDPOINTS.map((e) => `${prefix}/services/${e.service}/${e.address}`).sort();
        // Registered (and back, after an earlier fault) before the signal.
        await eventually(async () => expect(Array.from((await etcdState()).keys()).filter((k) => childKeys.includes(k)).sort()).toEqual(childKeys), { timeout: 20_000 });
        note(`${who}`);
        const t0 = Date.now();
        child.process.kill('SIGTERM');
        const exit = await Promise.race([child.exited(), sleep(15_000).then(() => undefined)]);
        const left = await etcdState();
        note(`${who}: exited ${JSON.stringify(exit)} after ${Date.now() - t0} ms`);
        count('sigterm');
        if (!exit || exit.code !== 0) violation(`${who}: exit ${JSON.stringify(exit)}, expected code 0\n${child.output()}`);
        for (const k of childKeys) if (left.has(k)) violation(`${who}: ${k} still in etcd right after the child exited`);
      } catch (e) {
        const exit = await Promise.race([child.exited(), sleep(100).then(() => 'still running')]);
        violation(`${who}: ${(e as Error).message.split('\n')[0]} (exit ${JSON.stringify(exit)})\n${child.output()}`);
      }
    } else {
      note(`#${i} idle`);
    }
    if (op.gap > 0) await sleep(op.gap);
  }

  // ---- quiescence: faults lifted, every call settled ---------------------------------
  await liftFault();
  await target.heal();
  await Promise.all(pending);
  child.process.kill('SIGKILL');
  const quiet = Date.now();
  note('quiescence: every fault lifted, every call settled');

  const expected = new Map<string, { value: string; slot: number }>();
  for (let s = 0; s < SLOTS; s++) {
    for (const [k, calls] of slots[s]!.calls) {
      const value = intended(calls);
      if (value !== undefined) expected.set(keyOf(k), { value, slot: s });
    }
  }
  const describeExpected = (): string =>
    Array.from(expected, ([key, e]) => `${key} = ${e.value} on ${label(e.slot)}'s lease ${slots[e.slot]!.registry.leaseId}`).sort().join('\n');

  try {
    await eventually(
      async () => {
        const inEtcd = await etcdState();
        const want = Array.from(expected, ([key, e]) => `${key} = ${e.value} on lease ${slots[e.slot]!.registry.leaseId}`).sort();
        const got = Array.from(inEtcd, ([key, kv]) => `${key} = ${kv.value} on lease ${kv.lease}`).sort();
        expect(got, 'etcd vs the model').toEqual(want);
        const bySevice = (service: string): string[] =>
          Array.from(inEtcd)
            .filter(([key]) => key.startsWith(`${prefix}/services/${service}/`))
            .map(([key, kv]) => `${key} = ${kv.value}`)
            .sort();
        const seen = (list: readonly { key: string; address: string; metadata: Readonly<Record<string, unknown>> }[]): string[] =>
          list.map((e) => `${e.key} = ${encodeValue(e.address, e.metadata)}`).sort();
        for (const service of SERVICES) {
          expect(seen(await watchers[0]!.endpoints(service)), `endpoints(${service}) of watcher 0 vs etcd`).toEqual(bySevice(service));
          const all = await watchers[1]!.services();
          expect(seen(all.get(service) ?? []), `services().get(${service}) of watcher 1 vs etcd`).toEqual(bySevice(service));
        }
      },
      { timeout: 25_000, interval: 100 },
    );
    note(`converged ${Date.now() - quiet} ms after quiescence`);
    expect(violations, 'contract violations during the run').toEqual([]);
  } catch (e) {
    console.log(
      `[model] ${variant.name} FAILED, seed ${seed} (replay: MODEL_SEED=${SEED}${OPS !== 60 ? ` MODEL_OPS=${OPS}` : ''})\n` +
        `model at quiescence:\n${describeExpected() || '(nothing)'}\n--- log ---\n${log.join('\n')}`,
    );
    (e as Error).message = `[seed ${seed}, MODEL_SEED=${SEED}] ${(e as Error).message}`;
    throw e;
  } finally {
    child?.process.kill('SIGKILL');
    await Promise.all(open.map((r) => r.close()));
  }
  console.log(`[model] ${variant.name} seed ${seed} (MODEL_SEED=${SEED}): ${JSON.stringify(counts)}; ${expected.size} key(s) at the end; converged ${Date.now() - quiet} ms after quiescence; ${Date.now() - started} ms in all`);
}

// ---- against one etcd node -------------------------------------------------------------

describe(`model-based registration against one etcd node (MODEL_SEED=${SEED})`, () => {
  const etcd = new EtcdNode();
  let client: Etcd3;
  const target: Target = {
    get endpoints() {
      return etcd.clientUrl;
    },
    async pause(_member, ms) {
      etcd.pause();
      await sleep(ms);
      etcd.resume();
    },
    async kill(_member, ms) {
      await etcd.kill();
      await sleep(ms);
      await etcd.restart();
    },
    async heal() {
      if (etcd.isPaused) etcd.resume();
      if (!etcd.isRunning) await etcd.restart();
    },
  };

  beforeAll(async () => {
    await etcd.start();
    client = new Etcd3({ hosts: etcd.clientUrl });
  });
  afterEach(() => target.heal());
  afterAll(async () => {
    client.close();
    await etcd.stop();
  });

  // Found by MODEL_SEED=10 (the child started while etcd was down).
  it('a process whose only work is `await registry.register()` waits for etcd instead of exiting with status 0', async () => {
    // Whether the process ends depends on where the writer's retries are when etcd comes back: four children.
    const prefixes = [1, 2, 3, 4].map((n) => uniquePrefix(`model-keepalive-${n}`));
    const children = prefixes.map((prefix) =>
      spawnFixture('model-child.ts', {
        REGISTRY_ETCD_ENDPOINTS: etcd.clientUrl,
        REGISTRY_KEY_PREFIX: prefix,
        REGISTRY_LEASE_SECONDS: String(TTL),
        MODEL_CHILD_ENDPOINTS: JSON.stringify(CHILD_ENDPOINTS),
        DEBUG: 'etcd-service-registry:*',
      }),
    );
    try {
      // As MODEL_SEED=10 met it: etcd goes down while the children load, and comes back after the writer's retries backed off.
      await sleep(250);
      await etcd.kill();
      await sleep(2500);
      await etcd.restart();
      for (const [i, child] of children.entries()) {
        const exited = child.exited().then((exit) => {
          throw new Error(`child ${i} exited ${JSON.stringify(exit)} before registering\n${child.output()}`);
        });
        await Promise.race([child.line(/ready pid/, 30_000), exited]);
        expect((await client.getAll().prefix(`${prefixes[i]}/`).keys()).length).toBe(CHILD_ENDPOINTS.length);
      }
    } finally {
      for (const child of children) child.process.kill('SIGKILL');
    }
  });

  it('calls that wait out every fault (connect timeout 30 s)', { timeout: 90_000 }, async () => {
    await runModel({ name: 'node-patient', salt: 0, connectTimeoutSeconds: 30, members: 1 }, target, client);
  });

  it('calls that time out during faults and fall back (connect timeout 1 s)', { timeout: 90_000 }, async () => {
    await runModel({ name: 'node-impatient', salt: 1, connectTimeoutSeconds: 1, members: 1 }, target, client);
  });
});

// ---- against a 3-member cluster ---------------------------------------------------------

describe(`model-based registration against a 3-member cluster (MODEL_SEED=${SEED})`, () => {
  const cluster = new EtcdCluster({ size: 3 });
  let client: Etcd3;
  const target: Target = {
    get endpoints() {
      return cluster.endpoints;
    },
    async pause(member, ms) {
      const m = cluster.members[member]!;
      m.pause();
      await sleep(ms);
      m.resume();
    },
    async kill(member, ms) {
      const m = cluster.members[member]!;
      await m.kill();
      await sleep(ms);
      await cluster.restartMember(m);
    },
    async heal() {
      for (const m of cluster.members) {
        if (m.isPaused) m.resume();
        if (!m.isRunning) await cluster.restartMember(m);
      }
      await cluster.leader();
    },
  };

  beforeAll(async () => {
    await cluster.start();
    client = new Etcd3({ hosts: cluster.clientUrls });
  });
  afterEach(() => target.heal());
  afterAll(async () => {
    client.close();
    await cluster.stop();
  });

  it('member pauses and kills (connect timeout 30 s)', { timeout: 90_000 }, async () => {
    await runModel({ name: 'cluster', salt: 2, connectTimeoutSeconds: 30, members: 3 }, target, client);
  });
});
