/**
 * Signal handling shared by every Registry in the process: one listener per
 * signal while at least one registry is enrolled. On a signal, every enrolled
 * registry deregisters (bounded by its shutdown timeout), drains and closes;
 * then, if the application has no listener of its own for that signal, the
 * signal is raised again so the process ends exactly as Node would have ended
 * it without the library (killed by the signal: exit status 128+n in a shell).
 */
import { logger } from './log';

const debug = logger('shutdown');

export interface ShutdownParticipant {
  readonly signals: readonly NodeJS.Signals[];
  shutdown(signal: NodeJS.Signals): Promise<void>;
}

const participants = new Set<ShutdownParticipant>();
const listeners = new Map<NodeJS.Signals, () => void>();

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
  for (const [signal, listener] of listeners) {
    if (!want.has(signal)) {
      process.off(signal, listener);
      listeners.delete(signal);
    }
  }
  for (const signal of want) {
    if (listeners.has(signal)) continue;
    const listener = (): void => void onSignal(signal);
    listeners.set(signal, listener);
    process.on(signal, listener);
  }
}

async function onSignal(signal: NodeJS.Signals): Promise<void> {
  const ours = listeners.get(signal);
  if (ours) process.off(signal, ours);
  listeners.delete(signal);
  const targets = Array.from(participants).filter((p) => p.signals.includes(signal));
  debug('%s received: deregistering %d registr%s', signal, targets.length, targets.length === 1 ? 'y' : 'ies');
  // Keep the process alive while we deregister, even if nothing else does.
  const keepAlive = setInterval(() => undefined, 60_000);
  try {
    await Promise.allSettled(targets.map((p) => p.shutdown(signal)));
  } finally {
    clearInterval(keepAlive);
  }
  const appListeners = process.listeners(signal).filter((l) => !Array.from(listeners.values()).includes(l as () => void));
  if (appListeners.length > 0) {
    debug('%s: the application listens for it, leaving the exit to it', signal);
    return;
  }
  debug('%s: re-raising it so the process ends as it would have without the registry', signal);
  process.kill(process.pid, signal);
}
