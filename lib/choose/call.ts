/**
 * One request to an endpoint, reported by its client: `registry.begin(endpoint)`
 * when it starts, `call.end({ ok })` when it is over. Feeds the load-aware
 * pickers (requests in flight, latency) and outlier ejection.
 */
import { RegistryError, quote } from '../errors';
import type { EndpointLoad } from './load';

/** What `call.end()` takes: `ok: false` for a failure (no answer, a timeout, a 5xx or its equivalent). */
export interface CallOutcome {
  ok: boolean;
}

/** A request begun by `registry.begin(endpoint)`; end it exactly once (later calls are ignored). */
export interface Call {
  /**
   * Ends the request. With `{ ok }`: its duration is a latency sample and its
   * outcome counts for outlier ejection. Without an argument (the request was
   * cancelled by its caller): it only stops counting as in flight.
   */
  end(outcome?: CallOutcome): void;
}

export class EndpointCall implements Call {
  private ended = false;
  private readonly started = performance.now();

  constructor(
    private readonly request: EndpointLoad | undefined,
    private readonly latency: EndpointLoad | undefined,
    private readonly outcome: (ok: boolean) => void,
  ) {
    request?.begin();
    latency?.begin();
  }

  end(outcome?: CallOutcome): void {
    if (outcome !== undefined && (typeof outcome !== 'object' || outcome === null || typeof outcome.ok !== 'boolean')) {
      throw new RegistryError('ERR_INVALID_ARGUMENT', `call.end() expects { ok: boolean } or nothing, got ${quote(outcome)}`);
    }
    if (this.ended) return;
    this.ended = true;
    const now = performance.now();
    if (outcome === undefined) {
      if (this.request && this.request.inflight > 0) this.request.inflight--;
      if (this.latency && this.latency.inflight > 0) this.latency.inflight--;
      return;
    }
    const ms = now - this.started;
    this.request?.end(ms, outcome.ok, now);
    this.latency?.end(ms, outcome.ok, now);
    this.outcome(outcome.ok);
  }
}
