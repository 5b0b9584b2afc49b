/**
 * HealthCheck's schedule (no network: the checks are functions): one check in flight at a
 * time, the next an interval after the start of the previous one, or as soon as that one ends
 * when it was still out at its interval.
 */
import { describe, expect, it } from 'vitest';
import { HealthCheck, type HealthSpec } from '../../lib/publish/health';

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function schedule(spec: Pick<HealthSpec, 'intervalMs' | 'timeoutMs'>, runMs: number): Promise<{ starts: number[]; unhealthyAt: number | undefined }> {
  const starts: number[] = [];
  let unhealthyAt: number | undefined;
  const t0 = performance.now();
  const check = new HealthCheck(
    'test',
    {
      ...spec,
      failures: 3,
      passes: 1,
      what: 'a check function',
      run: (signal) => {
        starts.push(Math.round(performance.now() - t0));
        return new Promise<void>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true }));
      },
    },
    { healthy: () => undefined, unhealthy: () => (unhealthyAt ??= Math.round(performance.now() - t0)) },
  );
  check.start();
  return sleep(runMs).then(() => {
    check.stop();
    return { starts, unhealthyAt };
  });
}

describe('HealthCheck schedule', () => {
  it('a check that hangs for its whole timeout, as long as the interval: the next starts at its interval, none skipped', async () => {
    const { starts, unhealthyAt } = await schedule({ intervalMs: 200, timeoutMs: 200 }, 1050);
    // 0, 200, 400, 600, 800, 1000 (it skipped every other one: 0, 400, 800).
    expect(starts.length).toBeGreaterThanOrEqual(4);
    for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBeLessThan(350);
    // Three failures: at the end of the third check, 3 × 200 ms (it was 1000 ms).
    expect(unhealthyAt).toBeLessThan(900);
  });

  it('a timeout shorter than the interval: checks an interval apart, one at a time', async () => {
    const { starts } = await schedule({ intervalMs: 200, timeoutMs: 150 }, 850);
    expect(starts.length).toBeGreaterThanOrEqual(4);
    for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBeGreaterThanOrEqual(180);
  });

  it('a timeout longer than the interval: a check that hangs is followed at once, and the next is an interval after that one, never sooner', async () => {
    const { starts } = await schedule({ intervalMs: 150, timeoutMs: 250 }, 1100);
    // 0, 250, 500, 750, 1000: each as the previous one times out.
    expect(starts.length).toBeGreaterThanOrEqual(3);
    for (let i = 1; i < starts.length; i++) expect(starts[i]! - starts[i - 1]!).toBeGreaterThanOrEqual(140);
  });
});
