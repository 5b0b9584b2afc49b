/**
 * The command line's own signal listeners. While one is installed the library,
 * after deregistering on a signal, leaves the exit to us (lib/shutdown.ts only
 * re-raises a signal that the application does not listen for), so a command
 * can report what happened and exit with its own status.
 *
 * Repeats of a signal while stopping are ignored, not taken as "force it": one
 * Ctrl-C often arrives twice (the terminal signals the whole process group and
 * `npx`/`npm exec` forwards it to its child; `timeout` signals child and group),
 * and stopping is bounded anyway (REGISTRY_SHUTDOWN_TIMEOUT_SECONDS for register).
 */
import { logger } from '../log';

const debug = logger('cli');

export interface SignalWait {
  /** Resolves with the first of the signals received. */
  readonly received: Promise<NodeJS.Signals>;
  /** The first signal received so far, if any. */
  readonly first: NodeJS.Signals | undefined;
  /** Removes the listeners. */
  dispose(): void;
}

/** The waits installed and not disposed yet. */
const active = new Set<SignalWait>();

/**
 * Stops a running command as SIGTERM would (watch ends, register deregisters), unless
 * it is already stopping or none runs. For when stdout's reader went away.
 */
export function stopAsOnSigterm(): void {
  const waits = [...active];
  if (waits.length === 0 || waits.some((w) => w.first !== undefined)) return;
  process.emit('SIGTERM', 'SIGTERM');
}

export function untilSignal(signals: readonly NodeJS.Signals[]): SignalWait {
  let resolve!: (signal: NodeJS.Signals) => void;
  const received = new Promise<NodeJS.Signals>((r) => (resolve = r));
  let first: NodeJS.Signals | undefined;
  const listener = (signal: NodeJS.Signals): void => {
    if (first === undefined) {
      first = signal;
      resolve(signal);
      return;
    }
    debug('%s received while stopping after %s: ignored', signal, first);
  };
  for (const signal of signals) process.on(signal, listener);
  const wait: SignalWait = {
    received,
    get first() {
      return first;
    },
    dispose: () => {
      active.delete(wait);
      for (const signal of signals) process.off(signal, listener);
    },
  };
  active.add(wait);
  return wait;
}
