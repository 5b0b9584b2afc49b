/**
 * Every error the library throws is a RegistryError with a stable `code`.
 * Subclasses narrow the shape (a configuration error also carries the variable
 * and the value received); `isRegistryError` works across bundle copies because
 * it checks a brand, not the prototype chain.
 */

const brand = Symbol.for('etcd-service-registry.error');

export type RegistryErrorCode =
  | 'ERR_REGISTRY_CONFIG'
  | 'ERR_REGISTRY_CLOSED'
  | 'ERR_INVALID_SERVICE_NAME'
  | 'ERR_INVALID_ADDRESS'
  | 'ERR_INVALID_METADATA'
  | 'ERR_INVALID_ARGUMENT'
  | 'ERR_NOT_REGISTERED'
  | 'ERR_ETCD_UNREACHABLE'
  | 'ERR_ETCD_REQUEST'
  | 'ERR_PERMISSION_DENIED'
  | 'ERR_AUTHENTICATION_FAILED'
  | 'ERR_TLS'
  | 'ERR_NO_ENDPOINTS'
  | 'ERR_REQUEST_FAILED'
  | 'ERR_NOT_SYNCED'
  | 'ERR_TIMEOUT'
  | 'ERR_ABORTED';

export class RegistryError extends Error {
  readonly code: RegistryErrorCode;
  readonly [brand] = true;

  constructor(code: RegistryErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'RegistryError';
  }
}

/** A bad setting: names the environment variable (or option) and quotes the value received. */
export class RegistryConfigError extends RegistryError {
  /** The environment variable, or `options.<name>` for a typed option. */
  readonly variable: string;
  /** The value received, as given (secrets are replaced by a placeholder). */
  readonly value: unknown;

  constructor(variable: string, value: unknown, expected: string, options?: { cause?: unknown }) {
    super('ERR_REGISTRY_CONFIG', `${variable}=${quote(value)} is invalid: ${expected}`, options);
    this.name = 'RegistryConfigError';
    this.variable = variable;
    this.value = value;
  }
}

export class RegistryClosedError extends RegistryError {
  constructor(method: string) {
    super('ERR_REGISTRY_CLOSED', `registry.${method}() was called after close()`);
    this.name = 'RegistryClosedError';
  }
}

export class RegistryTimeoutError extends RegistryError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ERR_TIMEOUT', message, options);
    this.name = 'RegistryTimeoutError';
  }
}

export function isRegistryError(e: unknown): e is RegistryError {
  return typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[brand] === true;
}

/** Longest part of a value quoted in a message. */
const MAX_QUOTED = 200;

/** Quotes a value for an error message: strings in double quotes, the rest as JSON where possible. */
export function quote(value: unknown): string {
  if (typeof value === 'string') return value.length > MAX_QUOTED ? `${JSON.stringify(value.slice(0, MAX_QUOTED))}… (${value.length} characters)` : JSON.stringify(value);
  if (value === undefined) return 'undefined';
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return '[function]';
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  if (typeof value === 'symbol') return value.toString();
  try {
    const json = JSON.stringify(value);
    if (json === undefined) return String(value);
    return json.length > MAX_QUOTED ? `${json.slice(0, MAX_QUOTED)}…` : json;
  } catch {
    return String(value);
  }
}
