/**
 * Steps this process's wall clock, as NTP does to a machine whose clock was off (or a VM
 * resumed from a snapshot): Date.now() and `new Date()` jump by `offsetMs` at once and
 * run on from there. performance.now() and timers are not moved, as on a real machine.
 * Returns the function that puts the real clock back.
 */
export function stepWallClock(offsetMs: number): () => void {
  const RealDate = Date;
  class SteppedDate extends RealDate {
    constructor(...args: unknown[]) {
      if (args.length === 0) super(RealDate.now() + offsetMs);
      else super(...(args as [string | number | Date]));
    }

    static override now(): number {
      return RealDate.now() + offsetMs;
    }
  }
  globalThis.Date = SteppedDate as DateConstructor;
  return () => {
    globalThis.Date = RealDate;
  };
}
