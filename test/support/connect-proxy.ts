/**
 * An HTTP CONNECT proxy on loopback (what grpc-js tunnels through when `http_proxy` is set),
 * that tunnels only to the names it was given: `etcd.proxy.invalid:2379` → a loopback member,
 * say. A `.invalid` name never resolves anywhere else, so a client that reaches etcd by it
 * can only have gone through the proxy.
 */
import * as http from 'node:http';
import * as net from 'node:net';

export class ConnectProxy {
  private readonly server = http.createServer((_req, res) => res.writeHead(405).end());
  private readonly sockets = new Set<net.Socket>();
  /** The CONNECT targets asked for, in order ("host:port", as the client wrote them). */
  readonly tunnels: string[] = [];

  /** `routes`: CONNECT target ("name:port") → where it is tunnelled to (a loopback "host:port"). */
  constructor(private readonly routes: ReadonlyMap<string, string>) {
    this.server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
      const target = req.url ?? '';
      this.tunnels.push(target);
      this.sockets.add(client);
      client.once('close', () => this.sockets.delete(client));
      client.on('error', () => client.destroy());
      const to = this.routes.get(target);
      if (to === undefined) {
        client.end('HTTP/1.1 403 Forbidden\r\n\r\n');
        return;
      }
      const colon = to.lastIndexOf(':');
      const upstream = net.connect({ host: to.slice(0, colon), port: Number(to.slice(colon + 1)) }, () => {
        client.write('HTTP/1.1 200 Connection established\r\n\r\n');
        if (head.length > 0) upstream.write(head);
        upstream.pipe(client);
        client.pipe(upstream);
      });
      this.sockets.add(upstream);
      upstream.once('close', () => {
        this.sockets.delete(upstream);
        client.destroy();
      });
      upstream.on('error', () => client.destroy());
      client.once('close', () => upstream.destroy());
    });
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
    });
    return `http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
