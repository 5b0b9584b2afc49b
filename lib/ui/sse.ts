/**
 * The live feed to open pages, as server-sent events (`GET /events`,
 * text/event-stream; the browser's EventSource reconnects by itself):
 *
 * - `snapshot` on connect: everything the page shows, and the server's clock;
 * - `delta` every FLUSH_MS at most, with what changed since the last one
 *   (a burst of changes is one message, serialised once for every page);
 * - `status` when reachability, the revision or the skipped count moves;
 * - `leases` with new answers about the time left on leases.
 *
 * Bounded: at most MAX_CLIENTS pages; a page that cannot keep up (more than
 * MAX_BUFFERED_BYTES waiting in its socket) is dropped and reconnects to a
 * fresh snapshot. A comment line every HEARTBEAT_MS keeps idle streams alive.
 */
import type { ServerResponse } from 'node:http';
import type { LeaseClock } from './leases';
import type { ViewState } from './state';

export const FLUSH_MS = 100;
export const HEARTBEAT_MS = 15_000;
export const MAX_CLIENTS = 32;
export const MAX_BUFFERED_BYTES = 16 * 1024 * 1024;
/** How long the browser waits before reconnecting a dropped stream. */
const RETRY_MS = 1000;

/** The head of the event stream (also what HEAD /events answers). */
export const EVENT_STREAM_HEADERS: Readonly<Record<string, string>> = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-store',
  'X-Accel-Buffering': 'no',
};

export class EventFeed {
  private readonly clients = new Set<ServerResponse>();
  private flushTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly state: ViewState,
    private readonly leases: LeaseClock,
    /** The revision the view is at, read at each flush (progress notifications move it without events). */
    private readonly revision: () => number,
  ) {}

  get size(): number {
    return this.clients.size;
  }

  start(): void {
    this.flushTimer = setInterval(() => this.flush(), FLUSH_MS);
    this.flushTimer.unref();
    this.heartbeatTimer = setInterval(() => this.broadcast(': ping\n\n'), HEARTBEAT_MS);
    this.heartbeatTimer.unref();
  }

  /** Takes over a response as an event stream; false when too many pages are open. */
  attach(res: ServerResponse): boolean {
    if (this.closed || this.clients.size >= MAX_CLIENTS) return false;
    // Pending changes go to the pages already open first: the snapshot includes them.
    this.flush();
    res.writeHead(200, EVENT_STREAM_HEADERS);
    res.socket?.setNoDelay(true);
    this.clients.add(res);
    res.on('close', () => this.clients.delete(res));
    res.write(`retry: ${RETRY_MS}\n\n`);
    res.write(message('snapshot', { ...this.state.snapshot(), leases: this.leases.all() }));
    // Leases never asked yet (no page was open): ask now rather than at the next tick.
    void this.leases.tick();
    return true;
  }

  /** Sends what changed since the last flush to every page. */
  flush(): void {
    this.state.setRevision(this.revision());
    const { delta, status } = this.state.takeDelta();
    const leases = this.leases.takeChanged();
    if (this.clients.size === 0) return;
    let text = '';
    if (delta) text += message('delta', delta);
    if (status) text += message('status', status);
    if (leases) text += message('leases', leases);
    if (text !== '') this.broadcast(text);
  }

  private broadcast(text: string): void {
    for (const res of this.clients) {
      if (res.writableLength > MAX_BUFFERED_BYTES) {
        // Too far behind: drop it; the browser reconnects and gets a fresh snapshot.
        this.clients.delete(res);
        res.destroy();
        continue;
      }
      res.write(text);
    }
  }

  close(): void {
    this.closed = true;
    clearInterval(this.flushTimer);
    clearInterval(this.heartbeatTimer);
    for (const res of this.clients) res.end();
    this.clients.clear();
  }
}

/** One event; JSON never holds a raw line break, so `data:` is one line. */
function message(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}
