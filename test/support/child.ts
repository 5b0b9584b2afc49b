/** Spawns a TypeScript fixture as a real child process (through tsx) and waits for a line on its stdout. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

export interface Child {
  readonly process: ChildProcess;
  readonly output: () => string;
  /** Resolves with the first stdout line matching `pattern`. */
  line(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Resolves with the exit code and signal. */
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const root = path.resolve(__dirname, '../..');

/** `wrapper`: a command that runs node, e.g. `['unshare', '--pid', '--fork', '--kill-child']`. */
export function spawnFixture(fixture: string, env: Record<string, string>, wrapper: readonly string[] = []): Child {
  const command = [...wrapper, process.execPath, '--import', 'tsx', path.join(root, 'test/fixtures', fixture)];
  const child = spawn(command[0]!, command.slice(1), {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    process: child,
    output: () => `stdout:\n${out}\nstderr:\n${err}`,
    exited: () => exit,
    line: (pattern, timeoutMs = 20_000) =>
      new Promise((resolve, reject) => {
        const check = (): boolean => {
          const m = out.match(pattern);
          if (m) {
            cleanup();
            resolve(m);
          }
          return !!m;
        };
        const onExit = (): void => {
          cleanup();
          reject(new Error(`child exited before printing ${pattern}: ${`stdout:\n${out}\nstderr:\n${err}`}`));
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`child did not print ${pattern} within ${timeoutMs} ms: ${`stdout:\n${out}\nstderr:\n${err}`}`));
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          child.stdout.off('data', check);
          child.off('exit', onExit);
        };
        if (!check()) {
          child.stdout.on('data', check);
          child.once('exit', onExit);
        }
      }),
  };
}
