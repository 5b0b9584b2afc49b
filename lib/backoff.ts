/**
 * Retry and backoff policies (cockatiel): exponential with decorrelated jitter,
 * capped, so recovery follows within about one cap of etcd answering again.
 */
import { ExponentialBackoff, handleWhen, retry, type RetryPolicy } from 'cockatiel';

export const RETRY_INITIAL_DELAY_MS = 25;
export const RETRY_MAX_DELAY_MS = 1000;

export function cappedBackoff(maxDelay = RETRY_MAX_DELAY_MS): ExponentialBackoff<unknown> {
  return new ExponentialBackoff({ initialDelay: RETRY_INITIAL_DELAY_MS, maxDelay });
}

/** Retries every failure that `shouldRetry` accepts until the AbortSignal passed to execute() fires. */
export function retryForever(shouldRetry: (e: Error) => boolean = () => true, maxDelay = RETRY_MAX_DELAY_MS): RetryPolicy {
  return retry(handleWhen(shouldRetry), {
    maxAttempts: Number.POSITIVE_INFINITY,
    backoff: cappedBackoff(maxDelay),
  });
}
