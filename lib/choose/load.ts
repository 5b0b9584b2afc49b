/**
 * Per-endpoint load: requests in flight and a peak-EWMA latency estimate, as
 * Finagle's and Linkerd's balancers keep them. One mutable object per endpoint
 * of a load-aware picker, allocated when the endpoint is added, never on a pick.
 *
 * The estimate (milliseconds):
 * - a sample above it replaces it at once (the "peak": a slow endpoint is
 *   costly from its first slow answer);
 * - a sample below it pulls it down by an exponential moving average whose
 *   weight depends on the time since the previous sample, with the time
 *   constant DECAY_MS: after DECAY_MS of fast answers, about 63 % of the way;
 * - between samples it decays towards 0 with the same time constant, when read
 *   for a pick: an endpoint that got no traffic because it was slow is tried
 *   again after a while instead of being shunned for ever;
 * - before any sample it is INITIAL_LATENCY_MS.
 *
 * A failed request (timeout, connection error) counts as a sample of at least
 * FAILURE_PENALTY_MS, so an endpoint that fails fast does not look fast.
 */

/** The time constant of the decay, in ms. */
export const DECAY_MS = 10_000;
/** The estimate of an endpoint without any sample, in ms. */
export const INITIAL_LATENCY_MS = 20;
/** The smallest sample a failed request counts as, in ms. */
export const FAILURE_PENALTY_MS = 1_000;

export class EndpointLoad {
  /** Requests begun and not yet ended. */
  inflight = 0;
  /** The peak-EWMA latency in ms; negative before the first sample. */
  ewma = -1;
  /** When `ewma` was last updated (performance.now() ms). */
  stamp = 0;

  /** The latency estimate at `now`, decayed since the last sample. */
  latency(now: number): number {
    if (this.ewma < 0) return INITIAL_LATENCY_MS;
    const elapsed = now - this.stamp;
    return elapsed <= 0 ? this.ewma : this.ewma * Math.exp(-elapsed / DECAY_MS);
  }

  /** Least-latency's cost: the estimate × (requests in flight + 1). */
  cost(now: number): number {
    return this.latency(now) * (this.inflight + 1);
  }

  begin(): void {
    this.inflight++;
  }

  /** Ends one request of `ms` milliseconds; `ok: false` counts as at least FAILURE_PENALTY_MS. */
  end(ms: number, ok: boolean, now: number): void {
    if (this.inflight > 0) this.inflight--;
    let sample = ms >= 0 && Number.isFinite(ms) ? ms : 0;
    if (!ok && sample < FAILURE_PENALTY_MS) sample = FAILURE_PENALTY_MS;
    const current = this.latency(now);
    if (this.ewma < 0 || sample >= current) {
      this.ewma = sample;
    } else {
      const elapsed = Math.max(0, now - this.stamp);
      const w = Math.exp(-elapsed / DECAY_MS);
      this.ewma = current * w + sample * (1 - w);
    }
    this.stamp = now;
  }
}
