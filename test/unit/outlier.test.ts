import { afterEach, describe, expect, it, vi } from 'vitest';
import { EndpointCall } from '../../lib/choose/call';
import { EndpointLoad, FAILURE_PENALTY_MS } from '../../lib/choose/load';
import { OUTLIER_DEFAULTS, OutlierDetector, resolveOutlierOptions, type EjectedInfo } from '../../lib/choose/outlier';
import { RegistryError } from '../../lib/errors';
import type { Endpoint } from '../../lib/types';

const ep = (i: number, service = 'svc'): Endpoint => ({ service, address: `10.0.0.${i}:80`, metadata: {}, key: `/registry/services/${service}/10.0.0.${i}:80` });

function detector(size = 10) {
  const ejected: EjectedInfo[] = [];
  const returned: Endpoint[] = [];
  const d = new OutlierDetector({ size: () => size, ejected: (i) => ejected.push(i), returned: (e) => returned.push(e) });
  return { d, ejected, returned };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('OutlierDetector', () => {
  it('ejects after 5 failures in a row (a success resets the count), for 30 s × times ejected, capped at 300 s', () => {
    vi.useFakeTimers();
    const { d, ejected, returned } = detector();
    const e = ep(1);
    for (let i = 0; i < 4; i++) d.record(e, false, OUTLIER_DEFAULTS);
    d.record(e, true, OUTLIER_DEFAULTS);
    for (let i = 0; i < 4; i++) d.record(e, false, OUTLIER_DEFAULTS);
    expect(d.isEjected(e.key)).toBe(false);
    d.record(e, false, OUTLIER_DEFAULTS);
    expect(d.isEjected(e.key)).toBe(true);
    expect(ejected).toEqual([{ endpoint: e, failures: 5, seconds: 30, times: 1 }]);
    vi.advanceTimersByTime(29_999);
    expect(returned).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(returned).toEqual([e]);
    expect(d.isEjected(e.key)).toBe(false);
    const seconds: number[] = [];
    for (let round = 2; round <= 12; round++) {
      for (let i = 0; i < 5; i++) d.record(e, false, OUTLIER_DEFAULTS);
      seconds.push(ejected.at(-1)!.seconds);
      vi.advanceTimersByTime(300_000);
    }
    expect(seconds).toEqual([60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]);
    d.close();
  });

  it('ejects at most half of a service (rounded down), and none of a service of one', () => {
    const { d, ejected } = detector(5);
    for (let n = 1; n <= 5; n++) for (let i = 0; i < 5; i++) d.record(ep(n), false, OUTLIER_DEFAULTS);
    expect(ejected.map((i) => i.endpoint.address)).toEqual(['10.0.0.1:80', '10.0.0.2:80']);
    // another service has its own share
    for (let i = 0; i < 5; i++) d.record(ep(1, 'other'), false, OUTLIER_DEFAULTS);
    expect(ejected).toHaveLength(3);
    d.close();
    const one = detector(1);
    for (let i = 0; i < 50; i++) one.d.record(ep(1), false, OUTLIER_DEFAULTS);
    expect(one.ejected).toEqual([]);
  });

  it('forgets an endpoint that left its list, silently, freeing its share', () => {
    const { d, ejected, returned } = detector(2);
    for (let i = 0; i < 5; i++) d.record(ep(1), false, OUTLIER_DEFAULTS);
    d.forget(ep(1).key);
    expect(d.any).toBe(false);
    for (let i = 0; i < 5; i++) d.record(ep(2), false, OUTLIER_DEFAULTS);
    expect(ejected.map((i) => i.endpoint.address)).toEqual(['10.0.0.1:80', '10.0.0.2:80']);
    expect(returned).toEqual([]);
    d.close();
    expect(d.any).toBe(false);
  });

  it('validates its options naming the field and quoting the value', () => {
    expect(resolveOutlierOptions(undefined)).toBe(OUTLIER_DEFAULTS);
    expect(resolveOutlierOptions(false)).toBe(false);
    expect(resolveOutlierOptions({ failures: 2 })).toEqual({ ...OUTLIER_DEFAULTS, failures: 2 });
    expect(resolveOutlierOptions({ maxSeconds: 9 }, { ...OUTLIER_DEFAULTS, failures: 3 })).toEqual({ ...OUTLIER_DEFAULTS, failures: 3, maxSeconds: 9 });
    for (const [value, fragment] of [
      [{ failures: 1.5 }, 'outlier.failures 1.5 is invalid'],
      [{ baseSeconds: -1 }, 'outlier.baseSeconds -1 is invalid'],
      // Past what a timer can time (Node would end the ejection after 1 ms).
      [{ maxSeconds: 3_000_000 }, 'outlier.maxSeconds 3000000 is invalid: expected a number of seconds > 0 and ≤ 2147483'],
      [{ baseSeconds: 2_147_484 }, 'outlier.baseSeconds 2147484 is invalid'],
      [{ maxEjectedPercent: 101 }, 'outlier.maxEjectedPercent 101 is invalid'],
      ['yes', 'outlier "yes" is invalid'],
    ] as const) {
      let err: unknown;
      try {
        resolveOutlierOptions(value as never);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(RegistryError);
      expect((err as RegistryError).code).toBe('ERR_INVALID_ARGUMENT');
      expect((err as RegistryError).message).toContain(fragment);
    }
  });
});

describe('EndpointCall', () => {
  it('counts in flight until end(), records a sample with { ok }, none without, and ends once', () => {
    const load = new EndpointLoad();
    const outcomes: boolean[] = [];
    const call = new EndpointCall(load, undefined, (ok) => outcomes.push(ok));
    expect(load.inflight).toBe(1);
    call.end({ ok: false });
    call.end({ ok: true });
    expect(load.inflight).toBe(0);
    expect(load.ewma).toBe(FAILURE_PENALTY_MS);
    expect(outcomes).toEqual([false]);
    const cancelled = new EndpointCall(load, load, (ok) => outcomes.push(ok));
    expect(load.inflight).toBe(2);
    cancelled.end();
    expect(load.inflight).toBe(0);
    expect(outcomes).toEqual([false]);
    expect(() => new EndpointCall(undefined, undefined, () => {}).end({ ok: 'yes' } as never)).toThrow('call.end() expects { ok: boolean } or nothing, got {"ok":"yes"}');
  });
});
