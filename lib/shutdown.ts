/**
 * Signal handling shared by every Registry in the process: one listener per
 * signal while at least one registry is enrolled. On a signal, every enrolled
 * registry deregisters (bounded by its shutdown timeout), drains and closes;
 * then, if the application has no listener of its own for that signal, the
 * process ends as Node would have ended it without the library: the signal is
 * raised again (killed by the signal: exit status 128+n in a shell), and if the
 * process is still alive right after, because it is PID 1 (a container's init,
 * where a signal's default action does not apply), it exits with 128+n itself.
 *
 * One shutdown per process: a signal arriving while it runs (the same one again,
 * or another configured one) is absorbed, so it can neither cut the deregistration
 * short nor start a second one; the shutdown itself is bounded by each registry's
 * shutdown timeout and drain.
 */
import os from 'node:os';
import { logger } from './log';

const debug = logger('shutdown');

export interface ShutdownParticipant {
  readonly signals: readonly NodeJS.Signals[];
  shutdown(signal: NodeJS.Signals): Promise<void>;
}

/**
 * How long the process may still be running after raising the signal again before
 * it exits by itself. A signal whose default action applies kills the process before
 * `process.kill()` returns; still being here means it did not apply (PID 1).
 */
const RERAISE_GRACE_MS = 100;

const participants = new Set<ShutdownParticipant>();
const listeners = new Map<NodeJS.Signals, () => void>();
/** The signal whose shutdown is under way; undefined when none is. */
let shuttingDown: NodeJS.Signals | undefined;

/** Enrolls a registry; returns the function that takes it out again. */
export function enroll(participant: ShutdownParticipant): () => void {
  participants.add(participant);
  syncListeners();
  return () => {
    participants.delete(participant);
    syncListeners();
  };
}

function wanted(): Set<NodeJS.Signals> {
  const signals = new Set<NodeJS.Signals>();
  for (const p of participants) for (const s of p.signals) signals.add(s);
  return signals;
}

function syncListeners(): void {
  const want = wanted();
  // During a shutdown the registries close (and leave) one by one; the listeners stay, so that
  // a repeated signal is absorbed instead of meeting the default action half way through.
  if (shuttingDown === undefined) {
    for (const [signal, listener] of listeners) {
      if (!want.has(signal)) {
        process.off(signal, listener);
        listeners.delete(signal);
      }
    }
  }
  for (const signal of want) {
    if (listeners.has(signal)) continue;
    const listener = (): void => onSignal(signal);
    listeners.set(signal, listener);
    // First in line, so that it sees every listener this signal is delivered to,
    // including `process.once` ones that Node removes before calling them.
    process.prependListener(signal, listener);
  }
}

/** Whether anyone but the library listens for the signal. */
function appListens(signal: NodeJS.Signals): boolean {
  const ours = listeners.get(signal);
  return process.listeners(signal).some((l) => l !== ours);
}

function onSignal(signal: NodeJS.Signals): void {
  if (shuttingDown !== undefined) {
    debug('%s received during the shutdown started by %s: absorbed, the shutdown goes on', signal, shuttingDown);
    return;
  }
  shuttingDown = signal;
  void run(signal, appListens(signal));
}

async function run(signal: NodeJS.Signals, appListenedAtSignal: boolean): Promise<void> {
  const done = new Set<ShutdownParticipant>();
  // Keep the process alive while we deregister, even if nothing else does.
  const keepAlive = setInterval(() => undefined, 60_000);
  let leaveToApp: boolean;
  try {
    const targets = Array.from(participants).filter((p) => p.signals.includes(signal));
    debug('%s received: deregistering %d registr%s', signal, targets.length, targets.length === 1 ? 'y' : 'ies');
    await shutdownAll(targets, signal, done);
    leaveToApp = appListenedAtSignal || appListens(signal);
    if (!leaveToApp) {
      // The library ends the process: registries enrolled for other signals only (or since the
      // signal) would otherwise stay listed for a whole TTL after it has gone.
      for (let rest = others(done); rest.length > 0; rest = others(done)) {
        debug('%s: the process is about to end: deregistering %d more registr%s enrolled for other signals', signal, rest.length, rest.length === 1 ? 'y' : 'ies');
        await shutdownAll(rest, signal, done);
      }
      leaveToApp = appListens(signal);
    }
  } finally {
    clearInterval(keepAlive);
  }
  if (leaveToApp) {
    debug('%s: the application listens for it too, leaving the exit to it', signal);
    shuttingDown = undefined;
    syncListeners();
    return;
  }
  end(signal);
}

function others(done: ReadonlySet<ShutdownParticipant>): ShutdownParticipant[] {
  return Array.from(participants).filter((p) => !done.has(p));
}

async function shutdownAll(targets: readonly ShutdownParticipant[], signal: NodeJS.Signals, done: Set<ShutdownParticipant>): Promise<void> {
  const started = performance.now();
  const results = await Promise.allSettled(
    targets.map((p) => {
      done.add(p);
      try {
        return p.shutdown(signal);
      } catch (e) {
        return Promise.reject(e);
      }
    }),
  );
  for (const r of results) if (r.status === 'rejected') debug('%s: a registry failed to shut down: %s', signal, (r.reason as Error)?.message ?? String(r.reason));
  debug('%s: %d registr%s shut down in %d ms', signal, targets.length, targets.length === 1 ? 'y' : 'ies', Math.round(performance.now() - started));
}

/** Ends the process as the signal would have: raised again, then 128+n if it is still alive. */
function end(signal: NodeJS.Signals): void {
  const number = (os.constants.signals as Partial<Record<NodeJS.Signals, number>>)[signal];
  const status = number === undefined ? 1 : 128 + number;
  const ours = listeners.get(signal);
  if (ours) process.off(signal, ours);
  listeners.delete(signal);
  debug('%s: re-raising it so the process ends as it would have without the registry', signal);
  try {
    process.kill(process.pid, signal);
  } catch (e) {
    debug('%s: raising it again failed: %s', signal, (e as Error).message);
  }
  // Still alive: as PID 1 of a PID namespace (`docker run` without --init, a Kubernetes pod)
  // the kernel drops a signal whose action is the default, so raising it again did nothing.
  setTimeout(() => {
    debug('%s: still running %d ms after raising it again (PID %d; as PID 1 the default action does not apply): exiting with status %d', signal, RERAISE_GRACE_MS, process.pid, status);
    process.exit(status);
  }, RERAISE_GRACE_MS);
}
