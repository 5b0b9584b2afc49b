/**
 * A TCP proxy on loopback for fault injection between a client and etcd.
 *
 * Modes:
 *  - 'pass'      : bytes are forwarded both ways.
 *  - 'blackhole' : nothing is forwarded in either direction and no socket is closed: bytes are
 *                  read and dropped, so the client's writes succeed and it never gets an answer
 *                  (a silently dead connection). New connections are accepted but never connected
 *                  upstream.
 *
 * Back to 'pass': NEW connections work again. Every connection that lived through a blackhole
 * period (open when it started, or accepted during it) stays black-holed for good: it has lost
 * bytes, so resuming it would only feed a corrupt HTTP/2 stream. The client sees it stay silent
 * until it gives up on its own (grpc-js without keepalive never does) or until reset() /
 * resetBlackholed() destroys it, after which the client reconnects through the proxy.
 */
import * as net from 'node:net';

export type ProxyMode = 'pass' | 'blackhole';

export interface TcpProxyOptions {
  /** Listen port (default: any free port on 127.0.0.1). */
  port?: number;
  mode?: ProxyMode;
  /** Holds what the client sends this long before passing it on, in order: a slow link. */
  upstreamDelayMs?: number;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket | undefined;
  /** Dropping everything, for good. */
  blackholed: boolean;
  /** Holds what etcd sends on this connection this long before passing it on, in order. */
  downstreamDelayMs: number;
}

export class TcpProxy {
  private server: net.Server | undefined;
  private readonly pairs = new Set<Pair>();
  private targetHost: string;
  private targetPort: number;
  private _mode: ProxyMode;
  private _port: number | undefined;
  private readonly requestedPort: number;
  private readonly upstreamDelayMs: number;
  /** Bytes dropped because of blackhole mode (both directions). */
  droppedBytes = 0;
  /** Connections accepted since start. */
  acceptedConnections = 0;

  constructor(targetHost: string, targetPort: number, options: TcpProxyOptions = {}) {
    this.targetHost = targetHost;
    this.targetPort = targetPort;
    this._mode = options.mode ?? 'pass';
    this.requestedPort = options.port ?? 0;
    this.upstreamDelayMs = options.upstreamDelayMs ?? 0;
  }

  /** A proxy in front of `http://host:port` (e.g. an EtcdNode's clientUrl). */
  static forUrl(url: string, options: TcpProxyOptions = {}): TcpProxy {
    const u = new URL(url);
    return new TcpProxy(u.hostname, Number(u.port), options);
  }

  get port(): number {
    if (this._port === undefined) throw new Error('TcpProxy: not started');
    return this._port;
  }

  /** `http://127.0.0.1:<port>` */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get mode(): ProxyMode {
    return this._mode;
  }

  get target(): { host: string; port: number } {
    return { host: this.targetHost, port: this.targetPort };
  }

  /** Live client connections (including black-holed ones). */
  get connectionCount(): number {
    return this.pairs.size;
  }

  /** Live connections that are black-holed. */
  get blackholedCount(): number {
    let n = 0;
    for (const p of this.pairs) if (p.blackholed) n++;
    return n;
  }

  async start(): Promise<void> {
    if (this.server !== undefined) throw new Error('TcpProxy: already started');
    const server = net.createServer({ pauseOnConnect: true }, (socket) => this.onConnection(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port: this.requestedPort }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('TcpProxy: unexpected address');
    this._port = address.port;
    server.on('error', () => undefined);
  }

  /**
   * 'blackhole': every current connection stops forwarding (for good) and new ones are held
   * silent; 'pass': new connections are forwarded again (black-holed ones stay dead).
   */
  setMode(mode: ProxyMode): void {
    this._mode = mode;
    if (mode === 'blackhole') {
      for (const p of this.pairs) this.blackhole(p);
    }
  }

  set mode(mode: ProxyMode) {
    this.setMode(mode);
  }

  /**
   * Black-holes only the `index`-th live connection (0: the oldest, -1: the newest); the others
   * and new ones pass. A registry that first lists a service, then registers, opens KV
   * (etcd3's), its own session for the watch and the put on the lease
   * (lib/etcd/direct-channel.ts), then Lease (etcd3's).
   */
  blackholeAt(index: number): void {
    this.blackhole(this.pairAt(index));
  }

  /**
   * From now on, holds what etcd sends on the `index`-th live connection (0: the oldest) for
   * `ms` before passing it on, in order: one slow stream beside fast ones. etcd3 opens a
   * connection per service, in the order first used; a registry that first lists a service, then registers: KV, its own
   * session for the watch and the put on the lease (lib/etcd/direct-channel.ts), Lease.
   */
  delayDownstream(index: number, ms: number): void {
    this.pairAt(index).downstreamDelayMs = ms;
  }

  /** The `index`-th live connection (0: the oldest; negative: from the newest, -1 the newest). */
  private pairAt(index: number): Pair {
    const pair = [...this.pairs].at(index);
    if (pair === undefined) throw new Error(`no connection ${index}: ${this.pairs.size} live`);
    return pair;
  }

  /** Point NEW connections at another target; existing ones keep theirs (call reset() to move them). */
  setTarget(host: string, port: number): void {
    this.targetHost = host;
    this.targetPort = port;
  }

  /** Destroy every current connection with a TCP RST (client sees ECONNRESET). */
  reset(): void {
    for (const p of [...this.pairs]) this.destroyPair(p, true);
  }

  /** Closes every connection with a FIN, not a RST (as a process that exits cleanly leaves them). */
  closeConnections(): void {
    for (const p of [...this.pairs]) this.destroyPair(p, false);
  }

  /** Destroy (RST) only the connections that are black-holed. */
  resetBlackholed(): void {
    for (const p of [...this.pairs]) if (p.blackholed) this.destroyPair(p, true);
  }

  /** Stop listening and destroy every connection. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.reset();
    if (server !== undefined) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  private onConnection(client: net.Socket): void {
    this.acceptedConnections++;
    const pair: Pair = { client, upstream: undefined, blackholed: false, downstreamDelayMs: 0 };
    this.pairs.add(pair);
    client.setNoDelay(true);
    client.on('error', () => this.destroyPair(pair, false));
    client.on('close', () => this.destroyPair(pair, false));
    client.on('data', (chunk: Buffer) => {
      const up = pair.upstream;
      if (pair.blackholed || up === undefined) {
        this.droppedBytes += chunk.length;
        return;
      }
      if (this.upstreamDelayMs > 0) {
        // Timers of one duration fire in the order they were set: the bytes stay in order.
        setTimeout(() => pair.blackholed || up.destroyed || up.write(chunk), this.upstreamDelayMs);
        return;
      }
      if (!up.write(chunk)) {
        client.pause();
        up.once('drain', () => client.resume());
      }
    });

    if (this._mode === 'blackhole') {
      this.blackhole(pair);
      return;
    }

    const upstream = net.connect({ host: this.targetHost, port: this.targetPort });
    pair.upstream = upstream;
    upstream.setNoDelay(true);
    const onUpstreamGone = (): void => {
      // A black-holed client must not learn anything, not even that the upstream went away.
      if (pair.blackholed) pair.upstream = undefined;
      else this.destroyPair(pair, false);
    };
    upstream.on('error', onUpstreamGone);
    upstream.on('close', onUpstreamGone);
    upstream.on('data', (chunk: Buffer) => {
      if (pair.blackholed) {
        this.droppedBytes += chunk.length;
        return;
      }
      if (pair.downstreamDelayMs > 0) {
        setTimeout(() => pair.blackholed || client.destroyed || client.write(chunk), pair.downstreamDelayMs);
        return;
      }
      if (!client.write(chunk)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
    });
    upstream.once('connect', () => {
      if (!pair.blackholed) client.resume();
    });
  }

  private blackhole(pair: Pair): void {
    pair.blackholed = true;
    // Keep reading (and dropping) so that no byte is ever delivered later and nobody blocks.
    pair.client.resume();
    pair.upstream?.resume();
  }

  private destroyPair(pair: Pair, rst: boolean): void {
    if (!this.pairs.delete(pair)) return;
    for (const s of [pair.client, pair.upstream]) {
      if (s === undefined || s.destroyed) continue;
      if (rst && typeof s.resetAndDestroy === 'function' && s.readyState !== 'opening') s.resetAndDestroy();
      else s.destroy();
    }
  }
}
