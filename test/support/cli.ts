/**
 * Runs the command line as a real child process: the package's own bin
 * (bin/etcd-service-registry.js, on dist/) when the build is newer than every file under
 * lib/, as in CI, which builds first; otherwise from source (lib/cli/run.ts through tsx),
 * which takes about twice as long to start (1.3 s against 0.6 s here). The child gets this
 * process's environment minus every REGISTRY_* variable and DEBUG, plus `env`: a test states
 * all the settings it relies on.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(__dirname, '../..');

/** The newest modification time of a file under `dir` (0 when there is none). */
function newest(dir: string): number {
  let latest = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) latest = Math.max(latest, fs.statSync(path.join(entry.parentPath, entry.name)).mtimeMs);
  }
  return latest;
}

function entry(): readonly string[] {
  const built = path.join(root, 'dist/cli/main.js');
  if (fs.existsSync(built) && fs.statSync(built).mtimeMs > newest(path.join(root, 'lib'))) return [path.join(root, 'bin/etcd-service-registry.js')];
  return ['--import', 'tsx', path.join(root, 'lib/cli/run.ts')];
}

const ENTRY = entry();

export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Wall time from spawn to exit. */
  readonly ms: number;
}

export interface CliProcess {
  readonly process: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first match of `pattern` in the stream so far or to come; rejects on exit or timeout. */
  waitFor(stream: 'stdout' | 'stderr', pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  exited(): Promise<CliResult>;
}

function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const inherited = Object.entries(process.env).filter(([name]) => !name.startsWith('REGISTRY_') && name !== 'DEBUG');
  return { ...Object.fromEntries(inherited), ...env };
}

export function spawnCli(args: readonly string[], env: Record<string, string>): CliProcess {
  const started = Date.now();
  const child = spawn(process.execPath, [...ENTRY, ...args], {
    cwd: root,
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const text = { stdout: '', stderr: '' };
  child.stdout.on('data', (b: Buffer) => (text.stdout += b.toString()));
  child.stderr.on('data', (b: Buffer) => (text.stderr += b.toString()));
  const exit = new Promise<CliResult>((resolve) =>
    // 'close': the exit and the end of both streams, so the output is complete.
    child.once('close', (code, signal) => resolve({ code, signal, stdout: text.stdout, stderr: text.stderr, ms: Date.now() - started })),
  );
  const describe = (): string => `stdout:\n${text.stdout}\nstderr:\n${text.stderr}`;
  return {
    process: child,
    stdout: () => text.stdout,
    stderr: () => text.stderr,
    exited: () => exit,
    waitFor: (stream, pattern, timeoutMs = 15_000) =>
      new Promise((resolve, reject) => {
        const source = stream === 'stdout' ? child.stdout : child.stderr;
        const check = (): void => {
          const m = text[stream].match(pattern);
          if (m) {
            cleanup();
            resolve(m);
          }
        };
        const onExit = (): void => {
          cleanup();
          reject(new Error(`etcd-service-registry ${args.join(' ')} exited before printing ${pattern} on ${stream}:\n${describe()}`));
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`etcd-service-registry ${args.join(' ')} did not print ${pattern} on ${stream} within ${timeoutMs} ms:\n${describe()}`));
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          source.off('data', onData);
          child.off('close', onExit);
        };
        // Check after this chunk was appended (the collecting listener was added first).
        const onData = (): void => check();
        source.on('data', onData);
        child.once('close', onExit);
        check();
      }),
  };
}

/** Runs to completion; kills the child (and fails) if it takes longer than `timeoutMs`. */
export async function runCli(args: readonly string[], env: Record<string, string>, timeoutMs = 20_000): Promise<CliResult> {
  const cli = spawnCli(args, env);
  const timer = setTimeout(() => cli.process.kill('SIGKILL'), timeoutMs);
  try {
    const result = await cli.exited();
    if (result.signal === 'SIGKILL') throw new Error(`etcd-service-registry ${args.join(' ')} did not finish within ${timeoutMs} ms:\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`);
    return result;
  } finally {
    clearTimeout(timer);
  }
}
