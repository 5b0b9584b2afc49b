/**
 * gRPC calls made straight on Node's HTTP/2, one session per etcd member, for those on the
 * path from `register()` or `unregister()` to every watcher's event: the put on the lease and
 * unregister's transaction (unary), and the Watch stream.
 *
 * grpc-js runs about 110 µs of JavaScript per call before its request reaches the socket
 * (resolving, load-balancing, retrying and subchannel calls, their filters and timers) and
 * about as much on each answer (issue 17's note). Here a call is one HTTP/2 stream: headers,
 * length-prefixed messages, the answers and the status. Everything around the call stays
 * etcd3's: it is made inside `pool.withConnection`, on the member etcd3 picked, in that
 * member's policy and the client's failover policy, with etcd3's auth metadata. It fails as
 * grpc-js's call would (an Error with the same gRPC `code`, `details` and message), so
 * castGrpcError gives the same etcd3 error types and the same policies retry it.
 */
import * as http2 from 'node:http2';
import type { SecureClientSessionOptions } from 'node:http2';
import { logger } from '../log';
import { afterSend } from '../time';
import { DirectStream } from './direct-stream';
import { DEADLINE_EXCEEDED, INTERNAL, RESOURCE_EXHAUSTED, UNAVAILABLE, MessageReader, StreamEnd, callError, frame, type CallError } from './grpc-status';

const debug = logger('connection');

/** An answer larger than this is refused (the answers sent here are a put's or unregister's transaction's: a few hundred bytes at most). */
const MAX_ANSWER_BYTES = 4 * 1024 * 1024;
/** grpc-timeout takes at most 8 digits. */
const MAX_TIMEOUT_MS = 99_999_999;

/** What etcd3 hands a call as its metadata: grpc-js's Metadata. */
export interface CallMetadata {
  toHttp2Headers(): http2.OutgoingHttpHeaders;
}

export interface DirectChannelOptions {
  /** TLS (https://), as etcd3 decides it: credentials given, or an https:// member. */
  readonly secure: boolean;
  /** The CA (null: the system's roots), client certificate and key, as given to etcd3; read when a session is opened. */
  readonly tls?: () => { readonly ca?: Buffer | null; readonly cert?: Buffer; readonly key?: Buffer };
  /** A session not connected within this is given up (its calls fail as unreachable), as grpc-js gives up a dial. */
  readonly dialTimeoutMs: number;
}

/** A member's session and the calls on it: it keeps the process alive only while a call is out, as grpc-js's does. */
interface Member {
  readonly session: http2.ClientHttp2Session;
  active: number;
  connected: boolean;
  /** The session's own error (a refused connection, a TLS failure), which says more than a stream's. */
  error?: Error;
  /** Given up by retire(): the errors of the calls it ends are this library's doing. */
  retired: boolean;
  /** A ping after an unanswered call is out (probe()). */
  probing?: boolean;
}

export class DirectChannel {
  private readonly members = new Map<string, Member>();
  private closed = false;

  constructor(private readonly options: DirectChannelOptions) {}

  /**
   * One unary call to `host` (host:port, as etcd3's pool names the member): resolves with
   * the answer's message, or rejects with a CallError. `deadline` is a Date.now() time: it is
   * sent to etcd as grpc-timeout, and the call is cancelled when it passes.
   */
  call(host: string, path: string, message: Buffer, metadata: CallMetadata, deadline: number): Promise<Buffer> {
    return this.attempt(host, path, message, metadata, deadline, true);
  }

  /** call(); `again`: a stream the server refused before it saw it (a GOAWAY's) is sent once more, on a new session, as grpc-js does. */
  private attempt(host: string, path: string, message: Buffer, metadata: CallMetadata, deadline: number, again: boolean): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const timeoutMs = Math.min(MAX_TIMEOUT_MS, Math.max(1, Math.ceil(deadline - Date.now())));
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const settle = (error: CallError | undefined, answer?: Buffer): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (error) reject(error);
        else resolve(answer!);
      };
      const opened = this.open(host, path, metadata, { 'grpc-timeout': `${timeoutMs}m` }, settle);
      if (opened === undefined) return;
      const { member, stream } = opened;
      const end = new StreamEnd(stream);
      afterSend(() => {
        if (settled) return;
        timer = setTimeout(() => {
          // As grpc-js: the call ends here, the stream is cancelled.
          settle(callError(DEADLINE_EXCEEDED, `Deadline exceeded after ${(timeoutMs / 1000).toFixed(3)}s`));
          stream.close(http2.constants.NGHTTP2_CANCEL);
          // Not a word from etcd in all that time. etcd sends a unary answer's headers only with
          // the answer, so a slow commit looks the same: the connection itself is asked (a ping).
          if (!end.answered && member.connected) this.probe(host, member);
        }, Math.max(0, deadline - Date.now()));
        timer.unref();
      });
      const reader = new MessageReader();
      let answer: Buffer | undefined;
      let bad: string | undefined;
      let size = 0;
      stream.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_ANSWER_BYTES) {
          settle(callError(RESOURCE_EXHAUSTED, `Received message larger than max (${size} vs ${MAX_ANSWER_BYTES})`));
          stream.close(http2.constants.NGHTTP2_CANCEL);
          return;
        }
        const why = reader.push(chunk, (one) => {
          if (answer === undefined) answer = one;
          else bad ??= 'Response message parsing error: a second message in a unary answer';
        });
        bad ??= why;
      });
      stream.on('close', () => {
        if (settled) return;
        if (again && end.refused(stream.rstCode) && deadline > Date.now()) {
          settled = true;
          clearTimeout(timer);
          this.attempt(host, path, message, metadata, deadline, false).then(resolve, reject);
          return;
        }
        const failed = end.error(stream.rstCode, member);
        if (failed !== undefined) settle(failed);
        else if (bad !== undefined) settle(callError(INTERNAL, bad));
        else if (answer === undefined || reader.pending > 0) settle(callError(INTERNAL, 'Response message parsing error: no whole message in the answer'));
        else settle(undefined, answer);
      });
      stream.end(frame(message));
    });
  }

  /**
   * A bidirectional stream to `host` (etcd's Watch): requests encoded by `encode`, answers
   * decoded by `decode`. It holds the process open until it ends, as grpc-js's stream does.
   * Throws a CallError (UNAVAILABLE) when the channel is closed.
   */
  stream<Req, Res>(host: string, path: string, metadata: CallMetadata, encode: (req: Req) => Buffer, decode: (bytes: Buffer) => Res): DirectStream<Req, Res> {
    let failure: CallError | undefined;
    const opened = this.open(host, path, metadata, {}, (e) => (failure = e));
    if (opened === undefined) throw failure;
    const { member, stream } = opened;
    return new DirectStream(stream, encode, decode, member);
  }

  /**
   * Closes every session, as grpc-js closes a channel: no call starts on it any more (they fail
   * with UNAVAILABLE), the calls and streams already out end as they end (a put at its answer or
   * its deadline; a watch stream is cancelled by its owner before a client is closed). A call
   * still waiting for its session to connect fails (Node ends it with the session).
   */
  close(): void {
    this.closed = true;
    for (const [host, member] of this.members) {
      this.forget(host, member);
      member.session.close();
    }
  }

  /**
   * Asks `member`'s connection whether it is alive (an HTTP/2 ping, answered by etcd's gRPC
   * server itself, however busy etcd is) after a call on it went unanswered; no answer
   * within the dial timeout: retire().
   */
  private probe(host: string, member: Member): void {
    if (member.probing || member.retired) return;
    member.probing = true;
    const timer = setTimeout(() => {
      member.probing = false;
      this.retire(host, member, `a call had no answer within its deadline, and a ping none within ${this.options.dialTimeoutMs} ms`);
    }, this.options.dialTimeoutMs);
    timer.unref();
    const answered = (): void => {
      clearTimeout(timer);
      member.probing = false;
    };
    try {
      // An error here means the session is closing or gone: nothing left to give up.
      if (!member.session.ping(answered)) answered();
    } catch {
      answered();
    }
  }

  /**
   * Gives up `member`'s session (if it is still `host`'s) after a call on it had no answer
   * within its deadline, nor the ping after it (probe()): the next call dials anew. What else is out on it ends with
   * UNAVAILABLE, a watch stream too, which resumes at once on the next session instead of
   * being noticed silent by its own check after 30 s. Errors from that are marked `retired`:
   * the member's health counts the call that had no answer, not them.
   */
  private retire(host: string, member: Member, why: string): void {
    if (member.retired) return;
    member.retired = true;
    debug('direct session to %s given up: %s', host, why);
    this.forget(host, member, true);
  }

  /**
   * A stream of a call on `host`'s session, which is held open (ref'd) until the stream
   * closes; or undefined, `fail` told why (the channel or the session is closed).
   */
  private open(
    host: string,
    path: string,
    metadata: CallMetadata,
    headers: http2.OutgoingHttpHeaders,
    fail: (error: CallError) => void,
  ): { member: Member; stream: http2.ClientHttp2Stream } | undefined {
    if (this.closed) {
      fail(callError(UNAVAILABLE, 'Channel has been shut down'));
      return undefined;
    }
    const member = this.member(host);
    let stream: http2.ClientHttp2Stream;
    try {
      stream = member.session.request({
        ...metadata.toHttp2Headers(),
        ...headers,
        ':method': 'POST',
        ':path': path,
        'content-type': 'application/grpc',
        te: 'trailers',
      });
    } catch (e) {
      // The session is closing or destroyed (a GOAWAY came in this turn): the next call opens another.
      this.forget(host, member);
      fail(callError(UNAVAILABLE, `Connection dropped: ${(e as Error).message}`));
      return undefined;
    }
    if (member.active++ === 0) member.session.ref();
    stream.once('close', () => {
      if (--member.active === 0) member.session.unref();
    });
    return { member, stream };
  }

  private member(host: string): Member {
    const known = this.members.get(host);
    if (known !== undefined && !known.session.closed && !known.session.destroyed) return known;
    const { secure, tls, dialTimeoutMs } = this.options;
    const material = secure ? tls?.() : undefined;
    // As grpc-js: no cap on the session's memory (Node's 10 MB would refuse a big catch-up of a watch).
    const options: SecureClientSessionOptions = { maxSessionMemory: Number.MAX_SAFE_INTEGER };
    if (material) Object.assign(options, { ca: material.ca ?? undefined, cert: material.cert, key: material.key });
    const session = http2.connect(`${secure ? 'https' : 'http'}://${host}`, options);
    const member: Member = { session, active: 0, connected: false, retired: false };
    session.unref();
    const dial = setTimeout(() => {
      member.error = new Error(`connect to ${host} timed out after ${dialTimeoutMs} ms`);
      debug('direct session to %s: %s', host, member.error.message);
      this.forget(host, member, true);
    }, dialTimeoutMs);
    dial.unref();
    session.once('connect', () => {
      clearTimeout(dial);
      member.connected = true;
      debug('direct session to %s open', host);
    });
    // Each call sees its stream's own error; this only keeps a session's error from being thrown.
    session.on('error', (e: Error) => {
      member.error ??= e;
      debug('direct session to %s failed: %s', host, e.message);
    });
    // A GOAWAY: the calls already out finish on this session, the next ones open another.
    session.once('goaway', () => this.forget(host, member));
    session.once('close', () => {
      clearTimeout(dial);
      this.forget(host, member);
    });
    this.members.set(host, member);
    return member;
  }

  private forget(host: string, member: Member, destroy = false): void {
    if (this.members.get(host) === member) this.members.delete(host);
    if (destroy) member.session.destroy();
  }
}
