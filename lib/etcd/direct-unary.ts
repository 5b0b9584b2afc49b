/**
 * gRPC unary calls made straight on Node's HTTP/2, one session per etcd member, for the one
 * call on the path from `register()` to every watcher's event: the put on the lease.
 *
 * grpc-js runs about 110 µs of JavaScript per call before its request reaches the socket
 * (resolving, load-balancing, retrying and subchannel calls, their filters and timers) and
 * as much again on the answer (bench figure 1; .scratch measurements in issue 17's note).
 * Here a call is one HTTP/2 stream: headers, one length-prefixed message, the answer's
 * message and status. Everything around the call stays etcd3's: it is made inside
 * `pool.withConnection`, on the member etcd3 picked, in that member's policy and the
 * client's failover policy, with etcd3's auth metadata. It fails as grpc-js's call would
 * (an Error with the same gRPC `code`, `details` and message), so castGrpcError gives the
 * same etcd3 error types and the same policies retry it.
 */
import * as http2 from 'node:http2';
import type { SecureClientSessionOptions } from 'node:http2';
import { logger } from '../log';
import { afterSend } from '../time';

const debug = logger('connection');

/** gRPC status codes by number, as grpc-js names them in its messages. */
const STATUS = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
] as const;
const CANCELLED = 1;
const UNKNOWN = 2;
const DEADLINE_EXCEEDED = 4;
const PERMISSION_DENIED = 7;
const RESOURCE_EXHAUSTED = 8;
const UNIMPLEMENTED = 12;
const INTERNAL = 13;
const UNAVAILABLE = 14;
const UNAUTHENTICATED = 16;

/** An answer larger than this is refused (the answers sent here are a put's: a few dozen bytes). */
const MAX_ANSWER_BYTES = 4 * 1024 * 1024;
/** grpc-timeout takes at most 8 digits. */
const MAX_TIMEOUT_MS = 99_999_999;

/** What etcd3 hands a call as its metadata: grpc-js's Metadata. */
export interface CallMetadata {
  toHttp2Headers(): http2.OutgoingHttpHeaders;
}

/** The error grpc-js gives for a failed call (its ServiceError): castGrpcError reads `code` and the message. */
export interface CallError extends Error {
  code: number;
  details: string;
}

export function callError(code: number, details: string): CallError {
  // A plain Error (castGrpcError leaves any other class as it is), grpc-js's message format.
  return Object.assign(new Error(`${code} ${STATUS[code] ?? 'UNKNOWN'}: ${details}`), { code, details });
}

export interface DirectUnaryOptions {
  /** TLS (https://), as etcd3 decides it: credentials given, or an https:// member. */
  readonly secure: boolean;
  /** The CA (null: the system's roots), client certificate and key, as given to etcd3; read when a session is opened. */
  readonly tls?: () => { readonly ca?: Buffer | null; readonly cert?: Buffer; readonly key?: Buffer };
}

/** A member's session and the calls on it: it keeps the process alive only while a call is out, as grpc-js's does. */
interface Member {
  readonly session: http2.ClientHttp2Session;
  active: number;
  connected: boolean;
  /** The session's own error (a refused connection, a TLS failure), which says more than a stream's. */
  error?: Error;
}

export class DirectUnary {
  private readonly members = new Map<string, Member>();
  private closed = false;

  constructor(private readonly options: DirectUnaryOptions) {}

  /**
   * One unary call to `host` (host:port, as etcd3's pool names the member): resolves with
   * the answer's message, or rejects with a CallError. `deadline` is a Date.now() time: it is
   * sent to etcd as grpc-timeout, and the call is cancelled when it passes.
   */
  call(host: string, path: string, message: Buffer, metadata: CallMetadata, deadline: number): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      if (this.closed) {
        reject(callError(UNAVAILABLE, 'Channel has been shut down'));
        return;
      }
      const member = this.member(host);
      const timeoutMs = Math.min(MAX_TIMEOUT_MS, Math.max(1, Math.ceil(deadline - Date.now())));
      let stream: http2.ClientHttp2Stream;
      try {
        stream = member.session.request({
          ...metadata.toHttp2Headers(),
          ':method': 'POST',
          ':path': path,
          'content-type': 'application/grpc',
          te: 'trailers',
          'grpc-timeout': `${timeoutMs}m`,
        });
      } catch (e) {
        // The session is closing or destroyed (a GOAWAY came in this turn): the next call opens another.
        this.forget(host, member);
        reject(callError(UNAVAILABLE, `Connection dropped: ${(e as Error).message}`));
        return;
      }
      if (member.active++ === 0) member.session.ref();

      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const settle = (error: CallError | undefined, answer?: Buffer): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (--member.active === 0) member.session.unref();
        if (error) reject(error);
        else resolve(answer!);
      };
      afterSend(() => {
        if (settled) return;
        timer = setTimeout(() => {
          // As grpc-js: the call ends here, the stream is cancelled. A member never reached is
          // dialled anew by the next call rather than waited for again.
          settle(callError(DEADLINE_EXCEEDED, `Deadline exceeded after ${(timeoutMs / 1000).toFixed(3)}s`));
          stream.close(http2.constants.NGHTTP2_CANCEL);
          if (!member.connected) this.forget(host, member, true);
        }, Math.max(0, deadline - Date.now()));
        timer.unref();
      });

      let httpStatus: number | undefined;
      let status: http2.IncomingHttpHeaders | undefined;
      let failure: Error | undefined;
      const chunks: Buffer[] = [];
      let size = 0;
      stream.on('response', (headers) => {
        httpStatus = Number(headers[':status']);
        // A trailers-only answer (an error status, no message) has the status in its headers.
        if (headers['grpc-status'] !== undefined) status = headers;
      });
      stream.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_ANSWER_BYTES) {
          settle(callError(RESOURCE_EXHAUSTED, `Received message larger than max (${size} vs ${MAX_ANSWER_BYTES})`));
          stream.close(http2.constants.NGHTTP2_CANCEL);
          return;
        }
        chunks.push(chunk);
      });
      stream.on('trailers', (trailers) => (status = trailers));
      stream.on('error', (e: Error) => (failure = e));
      stream.on('close', () => {
        if (settled) return;
        if (status !== undefined) {
          const code = Number(status['grpc-status']);
          if (code !== 0) {
            settle(callError(Number.isInteger(code) && code > 0 && code < STATUS.length ? code : UNKNOWN, grpcMessage(status['grpc-message'])));
            return;
          }
          const answer = unframe(chunks, size);
          if (typeof answer === 'string') settle(callError(INTERNAL, answer));
          else settle(undefined, answer);
          return;
        }
        if (httpStatus !== undefined && httpStatus !== 200) {
          settle(callError(httpStatusCode(httpStatus), `Received HTTP status code ${httpStatus}`));
          return;
        }
        settle(dropped(member, stream.rstCode, failure));
      });
      stream.end(frame(message));
    });
  }

  /**
   * Gives up `host`'s session, as etcd3 resets a member's grpc-js clients after a call failed
   * for want of an answer: the next call dials anew; the calls still out on it end as they end.
   */
  reset(host: string): void {
    const member = this.members.get(host);
    if (member === undefined) return;
    this.forget(host, member);
    member.session.close();
  }

  /** Closes every session; calls still out end with UNAVAILABLE, as on a closed grpc-js channel. */
  close(): void {
    this.closed = true;
    for (const [host, member] of this.members) this.forget(host, member, true);
  }

  private member(host: string): Member {
    const known = this.members.get(host);
    if (known !== undefined && !known.session.closed && !known.session.destroyed) return known;
    const { secure, tls } = this.options;
    const material = secure ? tls?.() : undefined;
    const options: SecureClientSessionOptions = material ? { ca: material.ca ?? undefined, cert: material.cert, key: material.key } : {};
    const session = http2.connect(`${secure ? 'https' : 'http'}://${host}`, options);
    const member: Member = { session, active: 0, connected: false };
    session.unref();
    session.once('connect', () => {
      member.connected = true;
      debug('direct session to %s open', host);
    });
    // Each call sees its stream's own error; this only keeps a session's error from being thrown.
    session.on('error', (e: Error) => {
      member.error = e;
      debug('direct session to %s failed: %s', host, e.message);
    });
    // A GOAWAY: the calls already out finish on this session, the next ones open another.
    session.once('goaway', () => this.forget(host, member));
    session.once('close', () => this.forget(host, member));
    this.members.set(host, member);
    return member;
  }

  private forget(host: string, member: Member, destroy = false): void {
    if (this.members.get(host) === member) this.members.delete(host);
    if (destroy) member.session.destroy();
  }

}

/** Why a stream ended without a status, as grpc-js says it (a session that ended is forgotten by its 'close'). */
function dropped(member: Member, rstCode: number, failure: Error | undefined): CallError {
  const { constants } = http2;
  // A stream cancelled with its session says why in its cause (a refused connection).
  const cause = failure?.cause;
  const why = member.error ?? (cause instanceof Error ? cause : failure);
  if (!member.connected) return callError(UNAVAILABLE, `No connection established. Last error: ${why?.message ?? 'connection closed'}`);
  if (rstCode === constants.NGHTTP2_REFUSED_STREAM) return callError(UNAVAILABLE, 'Stream refused by server');
  if (rstCode === constants.NGHTTP2_CANCEL) return callError(CANCELLED, 'Call cancelled');
  if (rstCode === constants.NGHTTP2_ENHANCE_YOUR_CALM) return callError(RESOURCE_EXHAUSTED, 'Bandwidth exhausted or memory limit exceeded');
  if (rstCode === constants.NGHTTP2_INADEQUATE_SECURITY) return callError(PERMISSION_DENIED, 'Protocol not secure enough');
  return callError(UNAVAILABLE, `Connection dropped${why ? `: ${why.message}` : ''}`);
}

/** The request's one message, length-prefixed (not compressed). */
function frame(message: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  message.copy(out, 5);
  return out;
}

/** The answer's one message, or why it is not one. */
function unframe(chunks: readonly Buffer[], size: number): Buffer | string {
  const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
  if (bytes.length < 5) return `Response message parsing error: ${bytes.length} bytes, no message`;
  if (bytes[0] !== 0) return 'Response message parsing error: compressed message (no compression was offered)';
  const length = bytes.readUInt32BE(1);
  if (bytes.length !== 5 + length) return `Response message parsing error: ${bytes.length - 5} bytes after the prefix, ${length} announced`;
  return bytes.subarray(5);
}

function grpcMessage(value: string | string[] | undefined): string {
  const text = Array.isArray(value) ? value.join(',') : (value ?? '');
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** gRPC's mapping of an HTTP status that is not 200 (grpc-js's). */
function httpStatusCode(status: number): number {
  if (status === 400) return INTERNAL;
  if (status === 401) return UNAUTHENTICATED;
  if (status === 403) return PERMISSION_DENIED;
  if (status === 404) return UNIMPLEMENTED;
  if (status === 429 || status === 502 || status === 503 || status === 504) return UNAVAILABLE;
  return UNKNOWN;
}
