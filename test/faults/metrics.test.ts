/**
 * Metrics through OpenTelemetry, read with the SDK's own reader: each instrument
 * moves when its event happens, and registry.stats() reports the same figures.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { metrics } from '@opentelemetry/api';
import { MeterProvider, MetricReader, type DataPoint, type Histogram } from '@opentelemetry/sdk-metrics';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Registry } from '../../lib';
import { EtcdNode, findFreePort } from '../support/etcd';
import { eventually, uniquePrefix } from '../support/env';
import { TTL, faultRegistry, sleep } from './support';

class TestReader extends MetricReader {
  protected onShutdown(): Promise<void> {
    return Promise.resolve();
  }
  protected onForceFlush(): Promise<void> {
    return Promise.resolve();
  }
}

describe('metrics', () => {
  const etcd = new EtcdNode();
  const reader = new TestReader();
  const provider = new MeterProvider({ readers: [reader] });
  const open: Registry[] = [];
  const servers: http.Server[] = [];

  /** Data points of one instrument, as the SDK exports them. */
  async function points(name: string): Promise<DataPoint<number | Histogram>[]> {
    const { resourceMetrics } = await reader.collect();
    const found = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).filter((m) => m.descriptor.name === name);
    return found.flatMap((m) => m.dataPoints as DataPoint<number | Histogram>[]);
  }
  const sum = async (name: string, attrs: Record<string, string> = {}): Promise<number> =>
    (await points(name))
      .filter((p) => Object.entries(attrs).every(([k, v]) => p.attributes[k] === v))
      .reduce((n, p) => n + (typeof p.value === 'number' ? p.value : p.value.count), 0);

  beforeAll(async () => {
    metrics.setGlobalMeterProvider(provider);
    await etcd.start();
  });
  afterAll(async () => {
    await Promise.all(open.map((r) => r.close()));
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
    await provider.shutdown();
    metrics.disable();
    await etcd.stop();
  });

  it('each instrument moves when its event happens', async () => {
    const prefix = uniquePrefix('metrics');
    const a = faultRegistry(etcd.clientUrl, prefix);
    const b = faultRegistry(etcd.clientUrl, prefix);
    a.on('error', () => undefined);
    open.push(a, b);
    const server = http.createServer((req, res) => res.writeHead(req.url === '/fail' ? 503 : 200).end('ok'));
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;

    await a.register({ service: 'web', address: `127.0.0.1:${port}` });
    await a.register({ service: 'api', address: '10.0.0.1:80' });
    expect(await sum('service_registry.own.endpoints', { 'service_registry.prefix': prefix })).toBe(2);
    await b.endpoints('web');
    expect(await sum('service_registry.discovery.endpoints', { 'service_registry.service': 'web' })).toBe(1);

    // A change applied to a watched list: an endpoint on a port nothing listens on.
    const dead = await findFreePort();
    await a.register({ service: 'web', address: `127.0.0.1:${dead}` });
    await eventually(async () => expect(await sum('service_registry.discovery.changes', { 'service_registry.service': 'web' })).toBe(1));
    expect(await sum('service_registry.discovery.endpoints', { 'service_registry.service': 'web' })).toBe(2);

    // fetch: an answer, a 5xx, a refused connection (marked down: an ejection).
    for (let i = 0; i < 4; i++) await b.fetch('web', '/fail', { attempts: 3 }).catch(() => undefined);
    await eventually(async () => {
      expect(await sum('service_registry.fetch.attempts', { outcome: 'http_5xx' })).toBeGreaterThanOrEqual(1);
      expect(await sum('service_registry.fetch.attempts', { outcome: 'connect_error' })).toBeGreaterThanOrEqual(1);
      expect(await sum('service_registry.ejections', { 'service_registry.service': 'web' })).toBeGreaterThanOrEqual(1);
    });
    expect(await sum('service_registry.fetch.duration', { 'service_registry.service': 'web' })).toBe(await sum('service_registry.fetch.attempts', { 'service_registry.service': 'web' }));

    // etcd paused past the TTL: unreachable, lease lost, everything put back on a new lease.
    const back = new Promise<void>((resolve) => a.once('reregistered', () => resolve()));
    etcd.pause();
    await sleep(TTL * 1000 + 1500);
    etcd.resume();
    await back;
    expect(await sum('service_registry.etcd.unreachable', { 'service_registry.prefix': prefix })).toBeGreaterThanOrEqual(1);
    expect(await sum('service_registry.lease.losses', { reason: 'no_keepalive_answer' })).toBe(1);
    expect(await sum('service_registry.lease.reregistrations', { 'service_registry.prefix': prefix })).toBe(1);
    // stats(): the same figures, without an SDK.
    const stats = a.stats();
    expect(stats.ownEndpoints).toBe(3);
    expect(stats.leaseLosses.no_keepalive_answer).toBe(1);
    expect(stats.reregistrations).toBe(1);

    // etcd restored empty: discovery reads its prefix again. The registrar puts its keys back
    // too; whether that counts as a second re-registration by the time the watcher has
    // resynced depends on the machine's load (one run on a loaded machine counted 2), so the
    // exact counts are checked above, before the wipe.
    await etcd.restart({ wipe: true });
    await eventually(async () => expect(await sum('service_registry.discovery.resyncs', { reason: 'data_loss' })).toBeGreaterThanOrEqual(1), { timeout: 20_000 });
    expect(a.stats().ownEndpoints).toBe(3);
    await eventually(() => expect(b.stats().endpoints.web).toBe(2), { timeout: 20_000 });
    const seen = b.stats();
    expect(seen.fetchAttempts.http_5xx).toBeGreaterThanOrEqual(1);
    expect(seen.fetchDuration.count).toBe(Object.values(seen.fetchAttempts).reduce((x, y) => x + y, 0));
    expect(seen.ejections).toBeGreaterThanOrEqual(1);
    // No address is ever an attribute.
    const { resourceMetrics } = await reader.collect();
    const attributes = JSON.stringify(resourceMetrics.scopeMetrics.flatMap((s) => s.metrics.flatMap((m) => m.dataPoints.map((p) => p.attributes))));
    expect(attributes).not.toMatch(/127\.0\.0\.1|10\.0\.0\.1/);
  });
});
