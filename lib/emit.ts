/** How the library's emitters deliver events. */
import { EventEmitter } from 'node:events';

/**
 * EventEmitter's emit(), except that a listener that throws cannot break the emitter's
 * caller: its exception is rethrown on the next tick, where it reaches the process's
 * 'uncaughtException' as an exception thrown from any Node callback does.
 */
export function emitSurfacing(emitter: EventEmitter, event: string | symbol, args: readonly unknown[]): boolean {
  try {
    return EventEmitter.prototype.emit.call(emitter, event, ...args);
  } catch (e) {
    surface(e);
    return true;
  }
}

/** Rethrows `e` on the next tick: it reaches 'uncaughtException' without breaking the caller. */
export function surface(e: unknown): void {
  process.nextTick(() => {
    throw e;
  });
}
