/** Tiny helpers for tests. */
import { randomBytes } from 'node:crypto';
import { inject } from 'vitest';

/** Comma-separated client URLs of the shared test etcd (provided by global-setup). */
export function etcdEndpoints(): string {
  const endpoints = inject('etcdEndpoints');
  if (typeof endpoints !== 'string' || endpoints === '') {
    throw new Error('etcdEndpoints was not provided: run this test in the `integration` vitest project');
  }
  return endpoints;
}

let prefixCounter = 0;

/**
 * A key prefix unique to this call, `test/<name>-<random>` (letters, digits, `-`, `/` only).
 * Characters outside that set in `name` become `-`.
 */
export function uniquePrefix(name = 'test'): string {
  const clean =
    name
      .replace(/[^A-Za-z0-9/-]+/g, '-')
      .replace(/\/{2,}/g, '/')
      .replace(/^[-/]+|[-/]+$/g, '')
      .slice(0, 60) || 'test';
  return `test/${clean}-${process.pid.toString(36)}${(++prefixCounter).toString(36)}${randomBytes(4).toString('hex')}`;
}

export interface EventuallyOptions {
  /** Give up after this many ms (default 10 000). */
  timeout?: number;
  /** Wait between attempts in ms (default 25). */
  interval?: number;
}

/**
 * Retry `fn` (an assertion, sync or async) until it stops throwing; resolves with its result.
 * At the timeout, throws the last error (so the failure message is the real assertion).
 */
export async function eventually<T>(fn: () => T | Promise<T>, options: EventuallyOptions = {}): Promise<T> {
  const timeout = options.timeout ?? 10_000;
  const interval = options.interval ?? 25;
  const deadline = performance.now() + timeout;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (performance.now() + interval > deadline) {
        if (err instanceof Error) {
          err.message = `${err.message} (still failing after ${timeout} ms)`;
        }
        throw err;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}
