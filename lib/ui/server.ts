/**
 * The web view's HTTP server (node:http, no framework) and its routes, all GET:
 *
 *   /            the page          /app.js, /app.css   its script and style
 *   /events      the live feed (server-sent events, lib/ui/sse.ts)
 *   /state.json  the same snapshot as JSON, for scripts
 *
 * Read-only: any other method is refused (405). Every answer carries a strict
 * Content-Security-Policy (scripts and styles from this origin only, nothing
 * inline, no frames, Trusted Types required), nosniff and no-referrer.
 *
 * Bound to a loopback address (the default, 127.0.0.1), it also checks the Host
 * header: a page elsewhere that points a DNS name at 127.0.0.1 (DNS rebinding)
 * gets 421 instead of the registry's contents.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { isIP } from 'node:net';
import { quote } from '../errors';
import { logger } from '../log';
import { CSS, HTML, SCRIPT } from './page';
import { EVENT_STREAM_HEADERS, type EventFeed } from './sse';
import type { ViewState } from './state';

const debug = logger('ui');

export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "require-trusted-types-for 'script'",
  "trusted-types 'none'",
].join('; ');

const COMMON_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy': CONTENT_SECURITY_POLICY,
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Cache-Control': 'no-store',
};

const FILES: Readonly<Record<string, { type: string; body: Buffer }>> = {
  '/': { type: 'text/html; charset=utf-8', body: Buffer.from(HTML) },
  '/app.js': { type: 'text/javascript; charset=utf-8', body: Buffer.from(SCRIPT) },
  '/app.css': { type: 'text/css; charset=utf-8', body: Buffer.from(CSS) },
};

/** Loopback names and addresses: binding to one of them means "this machine only". */
export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '');
  if (bare === 'localhost' || bare === '::1') return true;
  return isIP(bare) === 4 && bare.startsWith('127.');
}

/** The view could not listen where it was told to (the command line reports it as a failure, exit 1). */
export class ListenError extends Error {
  constructor(message: string, options: { cause: unknown }) {
    super(message, options);
    this.name = 'ListenError';
  }
}

export interface WebServer {
  /** `http://127.0.0.1:7070/` */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Listens on host:port; rejects with a ListenError (port in use, unknown address) naming them. */
export async function listen(host: string, port: number, state: ViewState, feed: EventFeed): Promise<WebServer> {
  let allowedHosts: Set<string> | undefined;
  const server = http.createServer((req, res) => handle(req, res, state, feed, allowedHosts));
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 0; // the event stream stays open
  await new Promise<void>((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException): void => {
      server.off('listening', onListening);
      const why =
        e.code === 'EADDRINUSE'
          ? 'the port is in use: choose another with --port'
          : e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN'
            ? 'no such address on this machine: check --host'
            : e.code === 'EACCES'
              ? 'not allowed (a port below 1024 needs privileges): choose another with --port'
              : e.message;
      reject(new ListenError(`could not listen on ${quote(`${host}:${port}`)}: ${why}`, { cause: e }));
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  });
  const address = server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  if (isLoopback(host)) {
    const p = address.port;
    allowedHosts = new Set([`127.0.0.1:${p}`, `localhost:${p}`, `[::1]:${p}`, `${shown}:${p}`, `${host}:${p}`]);
  }
  const url = `http://${isLoopback(host) || host === '0.0.0.0' || host === '::' ? shown : host}:${address.port}/`;
  debug('listening on %s', url);
  return {
    url,
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function handle(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  state: ViewState,
  feed: EventFeed,
  allowedHosts: ReadonlySet<string> | undefined,
): void {
  for (const [name, value] of Object.entries(COMMON_HEADERS)) res.setHeader(name, value);
  if (allowedHosts && !allowedHosts.has((req.headers.host ?? '').toLowerCase())) {
    return plain(res, 421, 'This view answers only to the loopback address it listens on.\n');
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    return plain(res, 405, 'Read-only: only GET and HEAD.\n');
  }
  const path = (req.url ?? '/').split('?')[0]!;
  const file = FILES[path];
  if (file) {
    res.writeHead(200, { 'Content-Type': file.type, 'Content-Length': file.body.length });
    res.end(req.method === 'HEAD' ? undefined : file.body);
    return;
  }
  if (path === '/events') {
    if (req.method === 'HEAD') {
      // The stream's head, without opening one (a page slot is not taken).
      res.writeHead(200, EVENT_STREAM_HEADERS);
      res.end();
      return;
    }
    if (!feed.attach(res)) plain(res, 503, 'Too many pages open on this view.\n');
    return;
  }
  if (path === '/state.json') {
    const body = Buffer.from(JSON.stringify(state.snapshot()));
    res.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': body.length });
    res.end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  if (path === '/favicon.ico') {
    res.writeHead(204);
    res.end();
    return;
  }
  plain(res, 404, 'Not found.\n');
}

function plain(res: http.ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(text);
}
