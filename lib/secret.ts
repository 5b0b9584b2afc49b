/**
 * A value that must never be printed: a password or a private key. It shows as
 * `<redacted>` in util.inspect, JSON, string conversion and template literals;
 * only `reveal()` returns it, and the library calls that in one place, when it
 * hands the credentials to the etcd client.
 */
import { inspect } from 'node:util';

/** What a secret looks like wherever it is printed. */
export const REDACTED = '<redacted>';

export class Secret<T extends string | Buffer = string> {
  // A private field: not an own property, so no inspect, spread, JSON or
  // structuredClone of the instance can reach it.
  readonly #value: T;

  constructor(value: T) {
    this.#value = value;
    Object.freeze(this);
  }

  /** The secret itself. Keep the result out of logs, errors and long-lived objects. */
  reveal(): T {
    return this.#value;
  }

  toJSON(): string {
    return REDACTED;
  }

  toString(): string {
    return REDACTED;
  }

  [Symbol.toPrimitive](): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return `Secret(${REDACTED})`;
  }
}

export function isSecret(value: unknown): value is Secret<string | Buffer> {
  return value instanceof Secret;
}
