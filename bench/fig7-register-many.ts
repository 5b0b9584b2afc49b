/**
 * Figure 7: register 10,000 endpoints (quick: 1,000) in one registry, 64 register()
 * calls in flight at a time, against raw `client.put(key).value(v)` with the same
 * concurrency. Repetitions alternate raw / ours, each on a fresh prefix.
 *
 * Then, from etcd's side: the number of distinct leases holding the registry's keys
 * (must be 1), and the keepalive traffic etcd receives over a window (its /metrics:
 * LeaseKeepAlive messages, leases renewed, all gRPC messages) with 10 endpoints
 * registered vs with the full count: it must not depend on the count. The registries
 * here use leaseSeconds 3 (a keepalive every second) so that the window sees enough.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import type { Etcd3 } from 'etcd3';
import type { Registry } from '../lib';
import { fmtRate, fmtRatio, median, nowMs, round, sleep } from './stats';
import { address, deletePrefix, etcdCounters, pool, rawClient, registry, uniquePrefix, value, type EtcdCounters, type Figure } from './support';

const CONCURRENCY = 64;
const SERVICES = 10;
const LEASE_SECONDS = 3;

function endpointOf(i: number): { service: string; address: string } {
  return { service: `svc-${i % SERVICES}`, address: address(i, 2000) };
}

/** Wall time, this process's CPU time and its GC pauses during `fn`, in ms. */
async function timed(fn: () => Promise<unknown>): Promise<{ ms: number; cpuMs: number; gcMs: number }> {
  let gcMs = 0;
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) gcMs += entry.duration;
  });
  observer.observe({ entryTypes: ['gc'] });
  const c0 = process.cpuUsage();
  const t0 = nowMs();
  await fn();
  const ms = nowMs() - t0;
  const cpu = process.cpuUsage(c0);
  await sleep(0); // let the observer deliver
  observer.disconnect();
  return { ms, cpuMs: (cpu.user + cpu.system) / 1000, gcMs };
}

function registerAll(reg: Registry, count: number): ReturnType<typeof timed> {
  return timed(() => pool(count, CONCURRENCY, (i) => reg.register(endpointOf(i))));
}

function putAll(client: Etcd3, prefix: string, count: number): ReturnType<typeof timed> {
  return timed(() =>
    pool(count, CONCURRENCY, async (i) => {
      const e = endpointOf(i);
      await client.put(`${prefix}/services/${e.service}/${e.address}`).value(value(e.address));
    }),
  );
}

interface Traffic {
  seconds: number;
  keepalivePerSecond: number;
  renewedPerSecond: number;
  grpcMsgsPerSecond: number;
  grpcBytesPerSecond: number;
}

async function traffic(endpoint: string, seconds: number): Promise<Traffic> {
  const a: EtcdCounters = await etcdCounters(endpoint);
  const t0 = nowMs();
  await sleep(seconds * 1000);
  const b = await etcdCounters(endpoint);
  const s = (nowMs() - t0) / 1000;
  return {
    seconds: round(s),
    keepalivePerSecond: round((b.keepaliveMsgs - a.keepaliveMsgs) / s),
    renewedPerSecond: round((b.leaseRenewed - a.leaseRenewed) / s),
    grpcMsgsPerSecond: round((b.grpcMsgs - a.grpcMsgs) / s),
    grpcBytesPerSecond: round((b.grpcBytes - a.grpcBytes) / s),
  };
}

export const fig7: Figure = async (ctx) => {
  const count = ctx.quick ? 1000 : 10_000;
  const reps = 3;
  const window = ctx.quick ? 2 : 10;
  const client = rawClient(ctx.endpoint);
  const rates = { raw: [] as number[], ours: [] as number[] };
  const cost: { raw: { cpuMsPerK: number; gcMs: number }[]; ours: { cpuMsPerK: number; gcMs: number }[] } = { raw: [], ours: [] };
  const revisionAtStart = (await ctx.etcd.status()).revision;
  let leases = -1;
  let keys = -1;
  let few: Traffic | undefined;
  let many: Traffic | undefined;
  try {
    // warm-up of both paths (JIT, connections), discarded
    {
      const prefix = uniquePrefix('fig7-warm');
      const reg = registry(ctx.endpoint, prefix, { leaseSeconds: LEASE_SECONDS });
      await registerAll(reg, 300);
      await putAll(client, `${prefix}-raw`, 300);
      await reg.close();
      await deletePrefix(client, `${prefix}-raw/`);
    }
    for (let rep = 0; rep < reps; rep++) {
      const prefix = uniquePrefix('fig7');
      const raw = await putAll(client, `${prefix}-raw`, count);
      const rawMs = raw.ms;
      rates.raw.push((count * 1000) / rawMs);
      cost.raw.push({ cpuMsPerK: round((raw.cpuMs * 1000) / count), gcMs: round(raw.gcMs) });
      await deletePrefix(client, `${prefix}-raw/`);
      await sleep(ctx.quick ? 100 : 300);
      const reg = registry(ctx.endpoint, prefix, { leaseSeconds: LEASE_SECONDS });
      try {
        const ours = await registerAll(reg, count);
        const oursMs = ours.ms;
        rates.ours.push((count * 1000) / oursMs);
        cost.ours.push({ cpuMsPerK: round((ours.cpuMs * 1000) / count), gcMs: round(ours.gcMs) });
        ctx.log(`fig7: repetition ${rep + 1}/${reps}: raw ${fmtRate((count * 1000) / rawMs)}, ours ${fmtRate((count * 1000) / oursMs)}`);
        if (rep === reps - 1) {
          const kvs = (await client.getAll().prefix(`${prefix}/services/`).exec()).kvs;
          keys = kvs.length;
          leases = new Set(kvs.map((kv) => kv.lease)).size;
          await sleep(500);
          many = await traffic(ctx.endpoint, window);
        }
      } finally {
        await reg.close();
      }
      await sleep(ctx.quick ? 100 : 300);
    }
    {
      const prefix = uniquePrefix('fig7-few');
      const reg = registry(ctx.endpoint, prefix, { leaseSeconds: LEASE_SECONDS });
      try {
        await registerAll(reg, 10);
        await sleep(500);
        few = await traffic(ctx.endpoint, window);
      } finally {
        await reg.close();
      }
    }
  } finally {
    client.close();
  }
  const r = { raw: median(rates.raw), ours: median(rates.ours) };
  const ratio = r.ours / r.raw;
  const kaRatio = many!.keepalivePerSecond / Math.max(few!.keepalivePerSecond, 1e-9);
  const n = count.toLocaleString('en-US');
  return {
    rows: [
      {
        figure: '7',
        what: `register ${n} endpoints in one registry, ${CONCURRENCY} in flight`,
        ours: fmtRate(r.ours),
        baseline: `${fmtRate(r.raw)} (raw puts, ${CONCURRENCY} in flight)`,
        ratio: fmtRatio(ratio),
        target: '≥ 0.8×',
        met: ratio >= 0.8,
      },
      {
        figure: '7',
        what: `  distinct leases holding the ${keys.toLocaleString('en-US')} keys`,
        ours: String(leases),
        baseline: '—',
        ratio: '—',
        target: 'exactly 1',
        met: leases === 1 && keys === count,
      },
      {
        figure: '7',
        what: `  keepalive msgs/s received by etcd (${window} s window, TTL ${LEASE_SECONDS} s): 10 vs ${n} endpoints`,
        ours: `${few!.keepalivePerSecond.toFixed(2)} vs ${many!.keepalivePerSecond.toFixed(2)}`,
        baseline: `all gRPC msgs/s: ${few!.grpcMsgsPerSecond.toFixed(1)} vs ${many!.grpcMsgsPerSecond.toFixed(1)}`,
        ratio: fmtRatio(kaRatio),
        target: 'independent of the count',
        // one keepalive per TTL/4 either way; allow one message of jitter over the window
        met: Math.abs(many!.keepalivePerSecond - few!.keepalivePerSecond) * window <= 1.5,
      },
    ],
    data: {
      count,
      concurrency: CONCURRENCY,
      services: SERVICES,
      leaseSeconds: LEASE_SECONDS,
      unit: 'registrations per second',
      perSecond: { raw: rates.raw.map(round), ours: rates.ours.map(round), ratio: round(ratio) },
      benchProcessCost: { note: 'CPU ms of this process per 1,000 registrations, and GC pause ms, per repetition', ...cost },
      etcdRevisionAtStart: revisionAtStart,
      leases,
      keys,
      traffic: { few, many },
    },
  };
};
