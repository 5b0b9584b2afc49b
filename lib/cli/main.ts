/**
 * The command line `etcd-service-registry <command>`: picks the command, prints
 * help, and turns every outcome into an exit status scripts can rely on:
 * 0 ok, 1 failure, 2 usage error. Errors are one line on stderr,
 * `etcd-service-registry: <message>`; the stack follows only when debug output
 * is on (DEBUG=etcd-service-registry:*), read through the `debug` package.
 */
import fs from 'node:fs';
import path from 'node:path';
import { isRegistryError } from '../errors';
import { logger } from '../log';
import { type Command, CommandFailed, PROGRAM, UsageError, parseCommand } from './args';
import { doctor } from './doctor';
import { ls } from './ls';
import { err, oneLine, out } from './output';
import { register } from './register';
import { stopAsOnSigterm } from './signals';
import { ui } from './ui';
import { unregister } from './unregister';
import { watch } from './watch';

const debug = logger('cli');

export const COMMANDS: readonly Command[] = [ls, watch, register, unregister, doctor, ui];

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** How long the process may linger after the command returned before it is ended (a handle left open). */
const LINGER_MS = 3000;

/**
 * Runs the command line with `argv` (without node and the script), sets
 * process.exitCode and resolves with it. Never rejects. Meant for the `bin`
 * shim: should something keep the process alive after the command finished,
 * it is ended after a short grace period.
 */
export async function main(argv: readonly string[]): Promise<number> {
  process.stdout.on('error', onStdoutError);
  // Nowhere left to say it when stderr fails too (a full disk with 2>&1): the command goes on
  // (register still deregisters) and its exit status tells.
  process.stderr.on('error', () => undefined);
  let code: number;
  try {
    code = await dispatch(argv);
  } catch (e) {
    code = report(e);
  }
  // A failed write to stdout (disk full) fails the command, whatever it did besides.
  if (stdoutFailed) code = EXIT_FAILURE;
  process.exitCode = code;
  const linger = setTimeout(() => {
    debug('a handle kept the process alive after the command finished: exiting');
    process.exit(stdoutFailed ? EXIT_FAILURE : code);
  }, LINGER_MS);
  linger.unref();
  return code;
}

let stdoutFailed = false;

/**
 * The reader went away (`watch | head -1`): stop as on SIGTERM, so that watch and
 * register end cleanly (register deregisters); a finished listing just ends.
 * Any other failed write (a full disk): the same, after one line on stderr, with
 * exit status 1.
 */
function onStdoutError(e: NodeJS.ErrnoException): void {
  process.stdout.off('error', onStdoutError);
  process.stdout.on('error', () => undefined);
  if (e.code === 'EPIPE') {
    debug('stdout closed by the reader: stopping as on SIGTERM');
  } else {
    stdoutFailed = true;
    process.exitCode = EXIT_FAILURE;
    err(`${PROGRAM}: cannot write to stdout: ${oneLine(e.message)}`);
  }
  stopAsOnSigterm();
}

async function dispatch(argv: readonly string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined) {
    err(`${PROGRAM}: missing command\n`);
    err(programHelp());
    return EXIT_USAGE;
  }
  if (first === '-h' || first === '--help' || first === 'help') {
    const topic = rest.find((a) => !a.startsWith('-'));
    if (topic === undefined) {
      out(programHelp());
      return EXIT_OK;
    }
    out(commandHelp(findCommand(topic)));
    return EXIT_OK;
  }
  if (first === '--version' || first === '-V') {
    out(version());
    return EXIT_OK;
  }
  if (first.startsWith('-')) throw new UsageError(`unknown option ${JSON.stringify(first)}; options go after the command`);
  const command = findCommand(first);
  const args = parseCommand(command, rest);
  if (args.values.help === true) {
    out(commandHelp(command));
    return EXIT_OK;
  }
  debug('running %s %o', command.name, rest);
  return command.run(args);
}

function findCommand(name: string): Command {
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) throw new UsageError(`unknown command ${JSON.stringify(name)}; the commands are ${COMMANDS.map((c) => c.name).join(', ')}`);
  return command;
}

/** Prints the error as one line (plus the stack in debug mode) and returns the exit status. */
function report(e: unknown): number {
  if (e instanceof UsageError) {
    err(`${PROGRAM}: ${oneLine(e.message)}`);
    err(`Run "${PROGRAM}${e.command === undefined ? '' : ` ${e.command}`} --help" for usage.`);
    return EXIT_USAGE;
  }
  const message = e instanceof CommandFailed || isRegistryError(e) ? e.message : e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  err(`${PROGRAM}: ${oneLine(message)}`);
  if (debug.enabled) err(stackOf(e));
  return EXIT_FAILURE;
}

/** The stack, followed by those of the causes. */
function stackOf(e: unknown): string {
  const parts: string[] = [];
  let current: unknown = e;
  for (let depth = 0; current !== undefined && depth < 10; depth++) {
    parts.push(current instanceof Error ? (current.stack ?? String(current)) : String(current));
    current = current instanceof Error ? current.cause : undefined;
    if (current !== undefined) parts.push('caused by:');
  }
  return parts.join('\n');
}

function programHelp(): string {
  const usage = (c: Command): string => c.synopsis.replace(/ \[--[^\]]*\]/g, '');
  const width = Math.max(...COMMANDS.map((c) => usage(c).length));
  return `Usage: ${PROGRAM} <command> [options]

Reads and changes the service registry in etcd. Configured by the library's
REGISTRY_* environment variables: REGISTRY_ETCD_ENDPOINTS, REGISTRY_KEY_PREFIX,
REGISTRY_ETCD_DIAL_TIMEOUT_SECONDS, REGISTRY_ETCD_REQUEST_TIMEOUT_SECONDS,
REGISTRY_LEASE_SECONDS, ... (see .env.example in the package).

Commands:
${COMMANDS.map((c) => `  ${usage(c).padEnd(width)}  ${c.summary}`).join('\n')}

Options:
  -h, --help     show help; "${PROGRAM} <command> --help" for a command's
  -V, --version  print the version

Every command also takes --timeout SECONDS: how long to try to reach etcd
(default 5 s; for register, REGISTRY_ETCD_CONNECT_TIMEOUT_SECONDS).

Exit status: 0 ok, 1 failure, 2 usage error. Errors are one line on stderr;
DEBUG=etcd-service-registry:* adds debug logs and stack traces.`;
}

function commandHelp(command: Command): string {
  return `Usage: ${PROGRAM} ${command.synopsis}\n\n${command.summary[0]!.toUpperCase()}${command.summary.slice(1)}.\n\n${command.help}`;
}

function version(): string {
  // lib/cli/main.ts and dist/cli/main.js both sit two levels below the package root.
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version?: string };
    return `${PROGRAM} ${pkg.version ?? 'unknown'}`;
  } catch {
    return `${PROGRAM} unknown`;
  }
}
