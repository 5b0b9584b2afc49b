/**
 * A bidirectional gRPC stream on Node's own HTTP/2 (lib/etcd/direct-channel.ts opens it), with
 * the part of grpc-js's ClientDuplexStream that lib/etcd/watch-stream.ts uses: `write()` of a
 * request, `'data'` for each answer, `'end'` when etcd ends it with status OK, `'error'` (a
 * CallError, as grpc-js's) when it ends otherwise or the connection drops, and `cancel()`,
 * after which it emits nothing more.
 */
import { EventEmitter } from 'node:events';
import * as http2 from 'node:http2';
import { INTERNAL, MessageReader, StreamEnd, callError, decodeMessage, frame, type CallError, type SessionState } from './grpc-status';

interface DirectStreamEvents<Res> {
  data: [Res];
  end: [];
  error: [CallError];
}

export class DirectStream<Req, Res> extends EventEmitter<DirectStreamEvents<Res>> {
  private ended = false;

  constructor(
    private readonly stream: http2.ClientHttp2Stream,
    private readonly encode: (req: Req) => Buffer,
    decode: (bytes: Buffer) => Res,
    /** What a dropped stream's error says of its session. */
    session: SessionState,
  ) {
    super();
    const end = new StreamEnd(stream);
    const reader = new MessageReader();
    const open = (): boolean => !this.ended;
    stream.on('data', (chunk: Buffer) => {
      const bad = reader.push(chunk, (bytes) => this.answer(decode, bytes), open);
      if (bad !== undefined) this.fail(callError(INTERNAL, bad));
    });
    stream.on('close', () => {
      if (this.ended) return;
      const failed = end.error(stream.rstCode, session);
      if (failed !== undefined) this.fail(failed);
      else if (reader.pending > 0) this.fail(callError(INTERNAL, `Response message parsing error: the stream ended inside a message (${reader.pending} bytes)`));
      else {
        this.ended = true;
        this.emit('end');
      }
    });
  }

  /** True until the stream ended or was cancelled. */
  get writable(): boolean {
    return !this.ended;
  }

  write(req: Req): void {
    if (this.ended) throw new Error('write after the stream ended');
    this.stream.write(frame(this.encode(req)));
  }

  /** Ends the stream from this side: RST_STREAM CANCEL, and no event after it. */
  cancel(): void {
    if (this.ended) return;
    this.ended = true;
    this.stream.close(http2.constants.NGHTTP2_CANCEL);
  }

  private answer(decode: (bytes: Buffer) => Res, bytes: Buffer): void {
    let res: Res;
    try {
      res = decodeMessage(decode, bytes);
    } catch (e) {
      this.fail(e as CallError);
      return;
    }
    this.emit('data', res);
  }

  /** Ends the stream with `error`, told once. */
  private fail(error: CallError): void {
    if (this.ended) return;
    this.ended = true;
    this.stream.close(http2.constants.NGHTTP2_CANCEL);
    this.emit('error', error);
  }
}
