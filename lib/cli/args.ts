/**
 * Argument parsing for the command line (node:util parseArgs, no dependency):
 * the shape of a command, the errors that decide the exit code, and the
 * validators that turn a bad argument into a usage error (exit 2).
 */
import { parseArgs } from 'node:util';
import { MAX_LEASE_SECONDS, MAX_TIMER_SECONDS } from '../config';
import { isRegistryError, quote } from '../errors';
import { validateAddress, validateMetadata, validateServiceAddress, validateServiceName } from '../validate';

export const PROGRAM = 'etcd-service-registry';

/** A mistake in the command line: exit 2, with a hint to --help. */
export class UsageError extends Error {
  constructor(
    message: string,
    /** The command whose --help the hint points to; undefined for the program's. */
    readonly command?: string,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A failure the command already explained in its message: exit 1, one line, no stack. */
export class CommandFailed extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CommandFailed';
  }
}

export type OptionSpec = { type: 'string' | 'boolean'; short?: string };

export interface Parsed {
  readonly values: Readonly<Record<string, string | boolean | undefined>>;
  readonly positionals: readonly string[];
}

export interface Command {
  readonly name: string;
  /** `ls [service] [--json]`: the usage line after the program name. */
  readonly synopsis: string;
  /** One line for the program's help. */
  readonly summary: string;
  /** The rest of `<command> --help`, after the usage line. */
  readonly help: string;
  readonly options: Readonly<Record<string, OptionSpec>>;
  /** Names of the positional arguments, in order; `required` of them must be given. */
  readonly positionals: { readonly names: readonly string[]; readonly required: number };
  run(args: Parsed): Promise<number>;
}

/** Options every command accepts. */
export const COMMON_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  help: { type: 'boolean', short: 'h' },
  timeout: { type: 'string' },
};

/** Parses a command's arguments; throws UsageError with a one-line message. */
export function parseCommand(command: Command, argv: readonly string[]): Parsed {
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({
      args: [...argv],
      options: { ...COMMON_OPTIONS, ...command.options },
      allowPositionals: true,
      strict: true,
    }) as typeof parsed;
  } catch (e) {
    throw new UsageError(parseArgsMessage(e), command.name);
  }
  if (parsed.values.help === true) return parsed;
  const { names, required } = command.positionals;
  if (parsed.positionals.length < required) {
    const missing = names.slice(parsed.positionals.length, required).map((n) => `<${n}>`);
    throw new UsageError(`${command.name}: missing ${missing.join(' and ')}`, command.name);
  }
  if (parsed.positionals.length > names.length) {
    const extra = parsed.positionals.slice(names.length);
    throw new UsageError(`${command.name}: unexpected argument${extra.length > 1 ? 's' : ''} ${extra.map((a) => quote(a)).join(' ')}`, command.name);
  }
  return parsed;
}

/** parseArgs' messages are long and mention positionals; keep the part an operator needs. */
function parseArgsMessage(e: unknown): string {
  const error = e as Error & { code?: string };
  // The option as parseArgs names it: '--timeout <value>', '-h, --help' or '--nope': its long name.
  const named = /'([^']+)'/.exec(error.message)?.[1];
  const option = named === undefined ? undefined : (/--[^\s,<]+/.exec(named)?.[0] ?? /-[^\s,<]+/.exec(named)?.[0]);
  switch (error.code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option ${quote(option ?? error.message)}`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (option === undefined) return error.message;
      if (/argument missing/.test(error.message)) return `option ${option} needs a value`;
      // A value that starts with "-" (a negative number) is taken for an option.
      if (/ambiguous/.test(error.message)) return `option ${option} needs a value; to pass one that starts with "-", write ${option}=VALUE`;
      return `option ${option} takes no value`;
    default:
      return error.message;
  }
}

function string(args: Parsed, name: string): string | undefined {
  const value = args.values[name];
  return typeof value === 'string' ? value : undefined;
}

/** `--timeout SECONDS`: a positive number of seconds, or undefined when not given. */
export function timeoutSeconds(args: Parsed, command: string): number | undefined {
  const text = string(args, 'timeout');
  if (text === undefined) return undefined;
  const n = /^(?:\d+(?:\.\d*)?|\.\d+)$/.test(text.trim()) ? Number(text) : NaN;
  if (!(n >= 0.001 && n <= MAX_TIMER_SECONDS)) {
    throw new UsageError(`--timeout ${quote(text)} is invalid: expected a number of seconds from 0.001 to ${MAX_TIMER_SECONDS}`, command);
  }
  return n;
}

/** `--ttl N`: whole seconds for the lease, or undefined when not given. */
export function ttlSeconds(args: Parsed, command: string): number | undefined {
  const text = string(args, 'ttl');
  if (text === undefined) return undefined;
  const n = /^\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!(Number.isSafeInteger(n) && n >= 1 && n <= MAX_LEASE_SECONDS)) {
    throw new UsageError(`--ttl ${quote(text)} is invalid: expected whole seconds from 1 to ${MAX_LEASE_SECONDS}`, command);
  }
  return n;
}

/** `--port N`: a TCP port from 0 (any free one) to 65535, or undefined when not given. */
export function portOption(args: Parsed, command: string): number | undefined {
  const text = string(args, 'port');
  if (text === undefined) return undefined;
  const n = /^\d{1,5}$/.test(text.trim()) ? Number(text) : NaN;
  if (!(Number.isInteger(n) && n >= 0 && n <= 65535)) {
    throw new UsageError(`--port ${quote(text)} is invalid: expected a TCP port from 0 (any free port) to 65535`, command);
  }
  return n;
}

/** `--host NAME`: the address to listen on, or undefined when not given. */
export function hostOption(args: Parsed, command: string): string | undefined {
  const text = string(args, 'host');
  if (text === undefined) return undefined;
  const host = text.trim();
  if (host === '' || /[\s/]/.test(host)) {
    throw new UsageError(`--host ${quote(text)} is invalid: expected an address or name to listen on, such as 127.0.0.1`, command);
  }
  return host;
}

/** `--metadata JSON`: a JSON object, or undefined when not given. */
export function metadataOption(args: Parsed, command: string): Readonly<Record<string, unknown>> | undefined {
  const text = string(args, 'metadata');
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new UsageError(`--metadata ${quote(text)} is invalid: expected a JSON object such as '{"zone":"eu-1"}'`, command);
  }
  return asUsage(() => validateMetadata(value, '--metadata'), command);
}

export function serviceArgument(value: string, command: string): string {
  return asUsage(() => validateServiceName(value), command);
}

/** An address as found in etcd (unregister may remove what another writer published). */
export function addressArgument(value: string, command: string): string {
  return asUsage(() => validateAddress(value), command);
}

/** An address to publish: host:port or a URL, checked as register() and REGISTRY_SERVICE_ADDRESS check it. */
export function serviceAddressArgument(value: string, command: string): string {
  return asUsage(() => validateServiceAddress(value), command);
}

function asUsage<T>(validate: () => T, command: string): T {
  try {
    return validate();
  } catch (e) {
    if (isRegistryError(e)) throw new UsageError(e.message, command);
    throw e;
  }
}
