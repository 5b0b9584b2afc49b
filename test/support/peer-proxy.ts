/**
 * A proxy in front of one etcd member's peer port, for network partitions on loopback: every
 * member advertises its proxy's URL to its peers, so every connection between two members goes
 * through the proxy of the one dialled. etcd's peers speak HTTP/1.1 and name themselves on every
 * raft request (`X-Server-From: <member id in hex>`), which is how a connection's dialler is told.
 *
 * `cutOff(id)`: the member of that id is cut off from its peers (its client port untouched):
 * every connection to it is closed, and so is every connection on which it names itself (on any
 * request, not only the first: etcd reuses a connection its prober opened for raft messages),
 * now and as soon as one is made, until `heal()`. Requests that name no member still pass from
 * it: etcd's prober (`/raft/probing`), version checks, and a follower's lease renewals forwarded
 * to the leader (`/leases`), so keepalives sent to the cut-off member may still be answered.
 */
import * as net from 'node:net';

interface Pair {
  readonly client: net.Socket;
  upstream: net.Socket | undefined;
  /** The dialling member's id (hex), once its first request named it. */
  from: string | undefined;
}

/** Longer than any `\r\nX-Server-From: <id>\r\n`: what of a chunk is kept to find one split across two. */
const MAX_NAME = 64;

export class PeerProxy {
  private server: net.Server | undefined;
  private readonly pairs = new Set<Pair>();
  /** Each pair's upstream socket, connecting or connected. */
  private readonly upstreams = new Map<Pair, net.Socket>();
  private _port: number | undefined;
  /** The member this proxy stands in front of (hex id), once known. */
  memberId: string | undefined;
  /** Cut off: members (hex ids) no connection may go to or come from. */
  private static readonly cut = new Set<string>();
  private static readonly all = new Set<PeerProxy>();

  constructor(private readonly targetPort: number) {}

  get url(): string {
    if (this._port === undefined) throw new Error('PeerProxy: not started');
    return `http://127.0.0.1:${this._port}`;
  }

  async start(): Promise<void> {
    const server = net.createServer((socket) => this.onConnection(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
    });
    this._port = (server.address() as net.AddressInfo).port;
    PeerProxy.all.add(this);
  }

  async close(): Promise<void> {
    PeerProxy.all.delete(this);
    for (const p of [...this.pairs]) this.drop(p);
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Cuts the member `id` (hex) off from every peer, on every proxy. */
  static cutOff(id: string): void {
    PeerProxy.cut.add(id);
    for (const proxy of PeerProxy.all) for (const p of [...proxy.pairs]) if (proxy.blocked(p)) proxy.drop(p);
  }

  /** Ends every cut. */
  static heal(): void {
    PeerProxy.cut.clear();
  }

  private blocked(p: Pair): boolean {
    return (this.memberId !== undefined && PeerProxy.cut.has(this.memberId)) || (p.from !== undefined && PeerProxy.cut.has(p.from));
  }

  private onConnection(client: net.Socket): void {
    const pair: Pair = { client, upstream: undefined, from: undefined };
    this.pairs.add(pair);
    client.on('error', () => this.drop(pair));
    client.on('close', () => this.drop(pair));
    if (this.blocked(pair)) {
      this.drop(pair);
      return;
    }
    // Every chunk is looked at before it is passed on (with the end of the one before, for a
    // header split between two): the dialler names itself on each raft request.
    let tail = '';
    const held: Buffer[] = [];
    client.on('data', (chunk: Buffer) => {
      const text = tail + chunk.toString('latin1');
      tail = text.slice(-MAX_NAME);
      const named = /\r\nX-Server-From: *([0-9a-f]+)\r\n/i.exec(text)?.[1]?.toLowerCase();
      if (named !== undefined) pair.from = named;
      if (this.blocked(pair)) {
        this.drop(pair);
        return;
      }
      if (pair.upstream === undefined) held.push(chunk);
      else if (!pair.upstream.write(chunk)) {
        client.pause();
        pair.upstream.once('drain', () => client.resume());
      }
    });
    const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort }, () => {
      if (!this.pairs.has(pair)) return;
      pair.upstream = upstream;
      for (const chunk of held.splice(0)) upstream.write(chunk);
      upstream.pipe(client);
    });
    upstream.on('error', () => this.drop(pair));
    upstream.on('close', () => this.drop(pair));
    this.upstreams.set(pair, upstream);
  }

  private drop(pair: Pair): void {
    if (!this.pairs.delete(pair)) return;
    pair.client.destroy();
    this.upstreams.get(pair)?.destroy();
    this.upstreams.delete(pair);
  }
}
