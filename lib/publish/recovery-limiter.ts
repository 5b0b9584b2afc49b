/**
 * Paces recovery writes (re-grant after a lost lease, re-put after a data loss or
 * a foreign delete), so that a cause that keeps coming back, or a misdetection,
 * can never turn into a write loop against etcd.
 *
 * The first recovery after a quiet spell runs at once (healing stays fast); each
 * next one waits until 1 s after the previous, then 2 s, 4 s, … up to `maxMs`;
 * after `quietMs` without a recovery the pace is back to immediate.
 */
export const RECOVERY_FIRST_INTERVAL_MS = 1000;
export const RECOVERY_MAX_INTERVAL_MS = 30_000;
export const RECOVERY_QUIET_MS = 60_000;

export class RecoveryLimiter {
  private interval = 0;
  private last = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly maxMs = RECOVERY_MAX_INTERVAL_MS,
    private readonly quietMs = RECOVERY_QUIET_MS,
    // Monotonic: on the wall clock, a step back would hold the next recovery back by the step.
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** How long a recovery starting now must wait; records it as the latest. */
  take(): number {
    const now = this.now();
    if (now - this.last > this.quietMs + this.interval) this.interval = 0;
    const at = Math.max(now, this.last + this.interval);
    this.interval = this.interval === 0 ? RECOVERY_FIRST_INTERVAL_MS : Math.min(this.interval * 2, this.maxMs);
    this.last = at;
    return at - now;
  }
}
