/**
 * Retry and backoff policies (cockatiel): exponential with decorrelated jitter,
 * capped, so recovery follows within about one cap of etcd answering again.
 */
import { ExponentialBackoff, handleWhen, retry, type IPolicy, type RetryPolicy } from 'cockatiel';

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

/**
 * `policy().execute(attempt)`, with the first attempt already under way as `first`: when it
 * works (the usual case) no policy is involved; when it fails, its failure is the policy's
 * first attempt, so the retries, their backoff and what is not retried stay exactly the same.
 */
export async function retryAfterFirst<T>(first: Promise<T>, policy: () => IPolicy, attempt: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  let failed: { error: unknown } | undefined;
  try {
    return await first;
  } catch (error) {
    failed = { error };
  }
  return policy().execute(() => {
    if (!failed) return attempt();
    const { error } = failed;
    failed = undefined;
    throw error;
  }, signal);
}
