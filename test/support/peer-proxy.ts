/**
 * A proxy in front of one etcd member's peer port, for network partitions on loopback: every
 * member advertises its proxy's URL to its peers, so every connection between two members goes
 * through the proxy of the one dialled. etcd's peers speak HTTP/1.1 and name themselves on every
 * raft request (`X-Server-From: <member id in hex>`), which is how a connection's dialler is told.
 *
 * `cut(id)`: the member of that id is cut off from its peers (its client port untouched): every
 * connection to it or from it is closed and new ones are closed as soon as they are made,
 * until `heal()`.
 */
import * as net from 'node:net';

interface Pair {
  readonly client: net.Socket;
  upstream: net.Socket | undefined;
  /** The dialling member's id (hex), once its first request named it. */
  from: string | undefined;
}

/** Most a connection's first request head may take before the dialler is told. */
const MAX_HEAD = 16 * 1024;

export class PeerProxy {
  private server: net.Server | undefined;
  private readonly pairs = new Set<Pair>();
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
    let head = Buffer.alloc(0);
    const onHead = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const text = head.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end === -1 && head.length < MAX_HEAD) return;
      client.off('data', onHead);
      pair.from = /\r\nX-Server-From: *([0-9a-f]+)\r\n/i.exec(text)?.[1]?.toLowerCase();
      if (this.blocked(pair)) {
        this.drop(pair);
        return;
      }
      client.pause();
      const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort }, () => {
        upstream.write(head);
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
      pair.upstream = upstream;
      upstream.on('error', () => this.drop(pair));
      upstream.on('close', () => this.drop(pair));
    };
    client.on('data', onHead);
  }

  private drop(pair: Pair): void {
    if (!this.pairs.delete(pair)) return;
    pair.client.destroy();
    pair.upstream?.destroy();
  }
}
