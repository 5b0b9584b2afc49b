/**
 * gRPC over HTTP/2 as grpc-js speaks it, for lib/etcd/direct-channel.ts: the length prefix of
 * each message, the status an answer ends with, and the errors grpc-js gives for each way a
 * call can end (its ServiceError: the same `code`, `details` and message), so that etcd3's
 * castGrpcError makes the same error types of them.
 */
import * as http2 from 'node:http2';

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
export const CANCELLED = 1;
const UNKNOWN = 2;
export const DEADLINE_EXCEEDED = 4;
const PERMISSION_DENIED = 7;
export const RESOURCE_EXHAUSTED = 8;
const UNIMPLEMENTED = 12;
export const INTERNAL = 13;
export const UNAVAILABLE = 14;
const UNAUTHENTICATED = 16;

/** The error grpc-js gives for a failed call (its ServiceError): castGrpcError reads `code` and the message. */
export interface CallError extends Error {
  code: number;
  details: string;
  /** Set when this library ended the call itself, giving up a silent session (lib/etcd/direct-channel.ts). */
  retired?: boolean;
}

export function callError(code: number, details: string): CallError {
  // A plain Error (castGrpcError leaves any other class as it is), grpc-js's message format.
  return Object.assign(new Error(`${code} ${STATUS[code] ?? 'UNKNOWN'}: ${details}`), { code, details });
}

/** An answer's message decoded by `decode`; one that does not decode fails as grpc-js fails it (INTERNAL). */
export function decodeMessage<Res>(decode: (bytes: Buffer) => Res, bytes: Buffer): Res {
  try {
    return decode(bytes);
  } catch (e) {
    throw callError(INTERNAL, `Response message parsing error: ${(e as Error).message}`);
  }
}

/** A message, length-prefixed (not compressed). */
export function frame(message: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  message.copy(out, 5);
  return out;
}

/**
 * The messages of an answer, as its bytes arrive in chunks cut anywhere: each whole message
 * is handed on as a view of the bytes, made of one copy at most (the chunks it spans joined once).
 */
export class MessageReader {
  private chunks: Buffer[] = [];
  private size = 0;

  /** Hands on every message completed by `chunk`, while `more()` holds; a string says why the bytes are not messages. */
  push(chunk: Buffer, each: (message: Buffer) => void, more: () => boolean = () => true): string | undefined {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size >= 5 && more()) {
      let head = this.chunks[0]!;
      if (head.length < 5) head = this.join();
      if (head[0] !== 0) return 'Response message parsing error: compressed message (no compression was offered)';
      const end = 5 + head.readUInt32BE(1);
      if (this.size < end) return undefined;
      const bytes = this.chunks.length === 1 ? head : this.join();
      const rest = bytes.subarray(end);
      this.chunks = rest.length === 0 ? [] : [rest];
      this.size = rest.length;
      each(bytes.subarray(5, end));
    }
    return undefined;
  }

  /** Bytes left over, not a whole message: an answer must end on a message's end. */
  get pending(): number {
    return this.size;
  }

  private join(): Buffer {
    const all = Buffer.concat(this.chunks, this.size);
    this.chunks = [all];
    return all;
  }
}

/**
 * How a stream ended, from what it received: its HTTP status, the gRPC status (in the
 * trailers, or in the headers of a trailers-only answer), its error.
 */
export class StreamEnd {
  private httpStatus: number | undefined;
  private status: http2.IncomingHttpHeaders | undefined;
  private failure: Error | undefined;

  constructor(stream: http2.ClientHttp2Stream) {
    stream.on('response', (headers) => {
      this.httpStatus = Number(headers[':status']);
      if (headers['grpc-status'] !== undefined) this.status = headers;
    });
    stream.on('trailers', (trailers) => (this.status = trailers));
    stream.on('error', (e: Error) => (this.failure = e));
  }

  /** Whether etcd said anything: the answer's headers came (or its status). */
  get answered(): boolean {
    return this.httpStatus !== undefined || this.status !== undefined;
  }

  /**
   * Refused before the server saw it: a stream above a GOAWAY's last id, or REFUSED_STREAM.
   * Safe to send again (grpc-js does, once).
   */
  refused(rstCode: number): boolean {
    if (this.answered) return false;
    const code = (this.failure as { code?: unknown } | undefined)?.code;
    return rstCode === http2.constants.NGHTTP2_REFUSED_STREAM || code === 'ERR_HTTP2_GOAWAY_SESSION';
  }

  /**
   * Once the stream closed: undefined for status OK, else the error grpc-js would give.
   * `session` says whether it ever connected, whether it is gone, and its own error.
   */
  error(rstCode: number, session: SessionState): CallError | undefined {
    if (this.status !== undefined) {
      const code = Number(this.status['grpc-status']);
      if (code === 0) return undefined;
      return callError(Number.isInteger(code) && code > 0 && code < STATUS.length ? code : UNKNOWN, grpcMessage(this.status['grpc-message']));
    }
    if (this.httpStatus !== undefined && this.httpStatus !== 200) return callError(httpStatusCode(this.httpStatus), `Received HTTP status code ${this.httpStatus}`);
    const error = this.dropped(rstCode, session);
    if (session.retired) error.retired = true;
    return error;
  }

  private dropped(rstCode: number, session: SessionState): CallError {
    // A stream cancelled with its session says why in its cause (a refused connection).
    const cause = this.failure?.cause;
    const why = session.error ?? (cause instanceof Error ? cause : this.failure);
    if (!session.connected) return callError(UNAVAILABLE, `No connection established. Last error: ${why?.message ?? 'connection closed'}`);
    const { constants } = http2;
    // Destroyed, not closed: a session closing gracefully (a GOAWAY, close()) may still cancel a stream.
    const gone = session.session.destroyed;
    if (rstCode === constants.NGHTTP2_REFUSED_STREAM) return callError(UNAVAILABLE, 'Stream refused by server');
    // Node cancels every stream of a session whose socket closed: that is the connection dropped (as grpc-js says).
    if (rstCode === constants.NGHTTP2_CANCEL && !gone) return callError(CANCELLED, 'Call cancelled');
    if (rstCode === constants.NGHTTP2_ENHANCE_YOUR_CALM) return callError(RESOURCE_EXHAUSTED, 'Bandwidth exhausted or memory limit exceeded');
    if (rstCode === constants.NGHTTP2_INADEQUATE_SECURITY) return callError(PERMISSION_DENIED, 'Protocol not secure enough');
    return callError(UNAVAILABLE, `Connection dropped${why ? `: ${why.message}` : ''}`);
  }
}

/** What a stream's error says of its session. */
export interface SessionState {
  readonly session: http2.ClientHttp2Session;
  readonly connected: boolean;
  readonly retired: boolean;
  readonly error?: Error;
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
