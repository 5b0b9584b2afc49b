/**
 * At most `concurrency` tasks at a time, the rest queued in order. Used for the
 * range reads of discovery, so a reset (or 10,000 first lookups at once) reads
 * a few prefixes at a time instead of every one at once.
 */
export class Limiter {
  private active = 0;
  private readonly queue: (() => void)[] = [];
  /** The most tasks that ever ran at once (for tests and debugging). */
  peak = 0;

  constructor(readonly concurrency: number) {}

  /** Tasks running now. */
  get running(): number {
    return this.active;
  }

  /** Tasks waiting for a slot. */
  get waiting(): number {
    return this.queue.length;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active < this.concurrency) this.active++;
    else await new Promise<void>((resolve) => this.queue.push(resolve)); // the slot is handed over as is
    this.peak = Math.max(this.peak, this.active);
    try {
      return await task();
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.active--;
    }
  }
}
