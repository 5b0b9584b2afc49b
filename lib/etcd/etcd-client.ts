/**
 * etcd3's client with more calls whose answers are decoded by this library instead of
 * protobufjs: `rangePage()`, a range read (lib/etcd/range-page.ts: the cold read of a big
 * prefix spends most of its CPU decoding), `putOnLease()`, a put on a lease (lib/etcd/put.ts: what
 * `register()` sends, on the path from the call to the watchers' events), `deleteOnLease()`, the
 * transaction `unregister()` sends (lib/etcd/delete-on-lease.ts), and `watchStream()`,
 * a Watch stream (lib/etcd/watch-response.ts: every client decodes every change). All go
 * through etcd3's own connection handling (member choice, per-member policy, auth metadata,
 * error types); the unary ones also through the client's failover policy and deadline, as
 * every other call does.
 */
import {
  Etcd3,
  EtcdInvalidAuthTokenError,
  castGrpcError,
  type IDuplexStream,
  type ILeaseKeepAliveRequest,
  type ILeaseKeepAliveResponse,
  type IOptions,
  type IRangeResponse,
  type IResponseHeader,
  type IWatchRequest,
  type IWatchResponse,
} from 'etcd3';
import type { Client, ClientDuplexStream, Metadata } from '@grpc/grpc-js';
import type { IPolicy } from 'cockatiel';
import { decodeRangeResponse, encodeRangeRequest, type RangePage, type RangePageRequest } from './range-page';
import { decodeWatchResponse } from './watch-response';
import { decodePutResponse, encodePutRequest, type PutRequest, type PutResponse } from './put';
import { decodeDeleteOnLeaseResponse, encodeDeleteOnLease, type DeleteOnLeaseRequest, type DeleteOnLeaseResponse } from './delete-on-lease';
import { DirectChannel } from './direct-channel';
import { except, firstThen, memberHost, othersFirst, type MemberOrder } from './member-order';
import { decodeMessage, type CallError } from './grpc-status';
import { ownBudget } from './call-budget';

const RANGE_METHOD = '/etcdserverpb.KV/Range';
const PUT_METHOD = '/etcdserverpb.KV/Put';
const TXN_METHOD = '/etcdserverpb.KV/Txn';

/** The Watch stream as etcd3's `watchClient.watch()` gives it. */
export type WatchDuplex = Awaited<ReturnType<Etcd3['watchClient']['watch']>>;

/** etcd's LeaseKeepAlive stream, as etcd3's `leaseClient.leaseKeepAlive()` gives it. */
export type KeepaliveDuplex = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

/** What grpc-js's generated client keeps of a method (protobufjs's encoder and decoder). */
interface ServiceMethod<Req, Res> {
  readonly path: string;
  readonly requestSerialize: (req: Req) => Buffer;
  readonly responseDeserialize: (bytes: Buffer) => Res;
}

/** A stream and the member (host:port) it is on. */
interface OnMember {
  readonly host: string;
  readonly stream: { readonly writable: boolean };
}

/** What a call's gRPC options are made of: its deadline (see CallBudget). */
export type CallDeadline = () => number;

export class EtcdClient extends Etcd3 {
  /** The put on the lease, unregister's transaction and the Watch stream go on Node's own HTTP/2 (lib/etcd/direct-channel.ts), the rest on grpc-js; undefined: all on grpc-js. */
  private readonly direct: DirectChannel | undefined;
  /** The last Watch stream opened, and the member it is on: see watchMember. */
  private watching: OnMember | undefined;
  /** The last LeaseKeepAlive stream opened, and the member it is on: see keepaliveMember. */
  private keepingAlive: OnMember | undefined;

  constructor(
    options: IOptions,
    /** The policy etcd3 runs every unary call in (`faultHandling.global`). */
    private readonly global: IPolicy,
    private readonly deadline: CallDeadline,
    /** False: every call on grpc-js (it honours an HTTP CONNECT proxy from grpc_proxy/https_proxy/http_proxy; this does not). */
    direct = true,
  ) {
    super({ ...options, faultHandling: { ...options.faultHandling, global } });
    const { credentials, hosts } = options;
    // TLS exactly when etcd3 uses it: credentials given, or an https:// member.
    const secure = credentials !== undefined || [hosts ?? []].flat().some((h) => h.startsWith('https:'));
    this.direct = direct
      ? new DirectChannel({
          secure,
          tls: credentials && (() => ({ ca: credentials.rootCertificate, cert: credentials.certChain, key: credentials.privateKey })),
          dialTimeoutMs: options.dialTimeout ?? 30_000, // etcd3's own default
        })
      : undefined;
  }

  override close(): void {
    this.direct?.close();
    super.close();
  }

  /**
   * A Watch stream, as etcd3's `watchClient.watch()` opens it (the same member choice, auth
   * metadata and failure marking; no deadline, as for every stream), its answers decoded by
   * decodeWatchResponse.
   */
  watchStream(): Promise<WatchDuplex> {
    return this.pool.withConnection('Watch', ({ resource, client, metadata: shared }) => {
      const method = serviceMethod<IWatchRequest, IWatchResponse>(client, 'Watch');
      const host = memberHost(resource);
      const metadata = requireLeader(shared);
      if (host === undefined || this.direct === undefined) {
        const stream = client.makeBidiStreamRequest<IWatchRequest, IWatchResponse>(method.path, method.requestSerialize, decodeWatchResponse, metadata, {});
        stream.on('error', (err: Error) => stream.writable && this.pool.markFailed(resource, err));
        if (host !== undefined) this.watching = onMember(host, stream);
        return stream as unknown as WatchDuplex;
      }
      const stream = this.direct.stream(host, method.path, metadata, method.requestSerialize, decodeWatchResponse);
      // As etcd3 marks the member failed; not for a stream this library ended (a silent session given up).
      stream.on('error', (err: CallError) => err.retired !== true && this.pool.markFailed(resource, err));
      this.watching = { host, stream };
      return stream as unknown as WatchDuplex;
    });
  }

  /**
   * The member (host:port) the open Watch stream is on; undefined when none is open. etcd3
   * picks a member at random for each call and stream, so a read that proves "etcd answers"
   * may go to any member but this one: a watch on a member gone silent (or cut off from its
   * peers) would hear nothing, unnoticed, for as long as the reads kept landing elsewhere.
   */
  get watchMember(): string | undefined {
    return openOn(this.watching);
  }

  /**
   * A LeaseKeepAlive stream, as etcd3's `leaseClient.leaseKeepAlive()` opens it (on grpc-js:
   * the same member choice, auth metadata and failure marking), the member it is on kept
   * (keepaliveMember).
   */
  keepaliveStream(): Promise<KeepaliveDuplex> {
    return this.pool.withConnection('Lease', ({ resource, client, metadata }) => {
      const stream = grpcKeepalive(client, metadata);
      stream.on('error', (err: Error) => stream.writable && this.pool.markFailed(resource, err));
      const host = memberHost(resource);
      this.keepingAlive = host === undefined ? undefined : onMember(host, stream);
      return stream as unknown as KeepaliveDuplex;
    });
  }

  /** The member (host:port) the open LeaseKeepAlive stream is on; undefined when none is open. */
  get keepaliveMember(): string | undefined {
    return openOn(this.keepingAlive);
  }

  /**
   * One keepalive of `leaseId` on a stream of its own, sent to a member other than the one the
   * open keepalive stream is on, and etcd's answer to it: a lease kept alive while that stream
   * waits on a member gone silent. With one member, on this library's own HTTP/2 session to
   * it (another connection than grpc-js's); undefined when there is nowhere else to send it
   * (see canKeepaliveElsewhere). Rejects when `signal` aborts first.
   */
  async keepaliveOnce(leaseId: string, signal: AbortSignal): Promise<ILeaseKeepAliveResponse | undefined> {
    if (!this.canKeepaliveElsewhere) return undefined;
    const { shuffled, hosts } = this.memberOrder();
    if (shuffled === undefined) return undefined;
    const avoid = this.keepaliveMember;
    // (Another member there is: only those; with one, its own session.)
    const elsewhere = avoid !== undefined && hosts.some((h) => memberHost(h) !== avoid);
    return await this.pool.withConnection(
      'Lease',
      ({ resource, client, metadata }) => {
        const host = memberHost(resource);
        const method = keepaliveMethod(client);
        const stream =
          host !== undefined && this.direct !== undefined
            ? (this.direct.stream(host, method.path, metadata, method.requestSerialize, method.responseDeserialize) as unknown as KeepaliveDuplex)
            : (grpcKeepalive(client, metadata) as unknown as KeepaliveDuplex);
        return firstAnswer(stream, { ID: leaseId }, signal);
      },
      elsewhere ? except(shuffled, avoid, hosts.length) : shuffled,
    );
  }

  /** Whether keepaliveOnce has somewhere to go but the keepalive stream's connection: not with one member and everything on grpc-js. */
  get canKeepaliveElsewhere(): boolean {
    return this.direct !== undefined || this.memberOrder(false).hosts.length > 1;
  }

  /** etcd3's members, and (`order`) its member order for one call (each member once, shuffled, and again): private in etcd3's types. */
  private memberOrder(order = true): { shuffled: MemberOrder | undefined; hosts: readonly unknown[] } {
    const pool: { shuffledHosts?: () => MemberOrder; hosts?: unknown[] } = this.pool as never;
    return { shuffled: order ? pool.shuffledHosts?.() : undefined, hosts: pool.hosts ?? [] };
  }

  /**
   * A count-only read of `key` sent to `member` (host:port) first: on this library's own
   * HTTP/2 session to it, the connection its Watch stream is on (see watchMember), so that an
   * answer proves that connection; another member only if that one refuses the call at once
   * (the failover policy's retry): `answeredBy` says which member answered (such an answer
   * proves nothing of the watch). Errors as etcd3's `kv.range()` gives them.
   */
  async countOn(member: string, key: Buffer, serializable: boolean, timeoutMs: number): Promise<{ header: IResponseHeader; answeredBy: string | undefined }> {
    // (A budget of its own: the pinned first attempt is not one of the client's member orders.)
    const deadline = ownBudget(timeoutMs);
    const req: RangePageRequest = { key, rangeEnd: Buffer.alloc(0), limit: 0, revision: 0, serializable, countOnly: true };
    let answeredBy: string | undefined;
    const header = await this.unary(
      RANGE_METHOD,
      encodeRangeRequest,
      (bytes) => decodeRangeResponse(bytes).header,
      req,
      async () => (await this.kv.range({ key, count_only: true, serializable }, { deadline: deadline() })).header,
      { direct: true, first: member, deadline, answered: (host) => (answeredBy = host) },
    );
    return { header, answeredBy };
  }

  /** One page of a range read, as RangePage. */
  rangePage(req: RangePageRequest): Promise<RangePage> {
    return this.unary(RANGE_METHOD, encodeRangeRequest, decodeRangeResponse, req, async () =>
      fromResponse(await this.kv.range({ key: req.key, range_end: req.rangeEnd, limit: req.limit, revision: req.revision })),
    );
  }

  /** A put of one key on a lease; errors as etcd3's `kv.put()` gives them (EtcdLeaseInvalidError for a lost lease). */
  putOnLease(req: PutRequest): Promise<PutResponse> {
    return this.unary(PUT_METHOD, encodePutRequest, decodePutResponse, req, () => this.kv.put({ key: Buffer.from(req.key), value: Buffer.from(req.value), lease: req.lease }), { direct: true });
  }

  /**
   * Deletes a key if it is on `lease`, else reads it (lib/etcd/delete-on-lease.ts): the
   * transaction `unregister()` sends. Errors as etcd3's `kv.txn()` gives them.
   */
  deleteOnLease(req: DeleteOnLeaseRequest): Promise<DeleteOnLeaseResponse> {
    return this.unary(TXN_METHOD, encodeDeleteOnLease, decodeDeleteOnLeaseResponse, req, async () => {
      const key = Buffer.from(req.key);
      const res = await this.kv.txn({
        compare: [{ key, target: 'Lease', result: 'Equal', lease: req.lease }],
        success: [{ request_delete_range: { key } }],
        failure: [{ request_range: { key } }],
      });
      // (On success the only response is the delete's: no key read.)
      return { header: res.header, succeeded: res.succeeded, kv: res.responses[0]?.response_range?.kvs[0] };
    }, { direct: true });
  }

  /**
   * A unary call as etcd3 makes its own: in the failover policy, through the pool's member
   * choice, per-member policy and auth metadata, with the call's deadline; gRPC errors cast
   * to etcd3's types. When etcd has forgotten the auth token (it restarted), or the token is
   * older than the last change of users or roles, `viaEtcd3` makes the same call through
   * etcd3, which renews the token and asks again.
   */
  private async unary<Req, Res>(
    method: string,
    encode: (req: Req) => Buffer,
    decode: (bytes: Buffer) => Res,
    req: Req,
    viaEtcd3: () => Promise<Res>,
    { direct = false, first, deadline = this.deadline, answered }: UnaryOptions = {},
  ): Promise<Res> {
    // One order of the members for every attempt of this call, as etcd3's own calls have:
    // each retry goes to the next member, not to a fresh random pick.
    const { shuffled, hosts } = this.memberOrder();
    const pinned = first === undefined ? undefined : hosts.find((h) => memberHost(h) === first);
    // (After `first`, the others first: a retry goes to another member, not to the one that refused.)
    const order = shuffled !== undefined && pinned !== undefined && first !== undefined ? firstThen(pinned as never, othersFirst(shuffled, first, hosts.length)) : shuffled;
    try {
      return await this.global.execute(() =>
        this.pool.withConnection(
          'KV',
          async ({ resource, client, metadata }) => {
            const member = memberHost(resource);
            const host = direct ? member : undefined;
            const res = await (host !== undefined && this.direct !== undefined
              ? this.direct
                  .call(host, method, encode(req), metadata, deadline())
                  .then((bytes) => decodeMessage(decode, bytes))
                  // Typed as etcd3 types grpc-js's errors, keeping `retired` (castGrpcError makes a new error; the pool's leaves a typed one be).
                  .catch((err: CallError) => Promise.reject(err.retired === true ? Object.assign(castGrpcError(err), { retired: true }) : castGrpcError(err)))
              : new Promise<Res>((resolve, reject) => {
                  client.makeUnaryRequest(method, encode, decode, req, metadata, { deadline: deadline() }, (err, res) => {
                    if (err) reject(castGrpcError(err));
                    else resolve(res!);
                  });
                }));
            answered?.(member);
            return res;
          },
          order,
        ),
      );
    } catch (e) {
      if (isOldAuthRevision(e)) {
        // The token predates a change of users or roles (etcd refused the call without applying
        // it): a fresh one, as etcd's Go client asks for, then the call again.
        (this.pool as unknown as { authenticator?: { invalidateMetadata?: () => void } }).authenticator?.invalidateMetadata?.();
        return await viaEtcd3();
      }
      if (!(e instanceof EtcdInvalidAuthTokenError)) throw e;
      return await viaEtcd3();
    }
  }
}

/** etcd's ErrAuthOldRevision: the call's token was issued before the auth store last changed. */
function isOldAuthRevision(e: unknown): boolean {
  return e instanceof Error && /etcdserver: revision of auth store is old/.test(e.message);
}

interface UnaryOptions {
  /** On this library's own HTTP/2 session to the member (lib/etcd/direct-channel.ts), not grpc-js. */
  readonly direct?: boolean;
  /** The member (host:port) to try first. */
  readonly first?: string;
  /** Each attempt's deadline (a Date.now() time); default: the call's budget (CallBudget). */
  readonly deadline?: CallDeadline;
  /** Told the member (host:port) whose answer the call resolves with. */
  readonly answered?: (member: string | undefined) => void;
}

/**
 * The call's metadata (etcd3's, shared by its calls: copied) with etcd's require-leader flag, as
 * etcd's Go client sets it for a watch (`clientv3.WithRequireLeader`): a member that has no
 * leader refuses the stream, and ends it once it has had none for three election timeouts. Cut
 * off from its peers, a member answers a watch's progress requests and canaries with its own
 * revision, and hears of no write: the watch then moves to another member instead.
 */
function requireLeader(metadata: Metadata): Metadata {
  const copy = metadata.clone();
  copy.set('hasleader', 'true');
  return copy;
}

/** A method's definition, from the generated client's constructor. */
function serviceMethod<Req, Res>(client: object, name: string): ServiceMethod<Req, Res> {
  return (client.constructor as unknown as { service: Record<string, ServiceMethod<Req, Res>> }).service[name]!;
}

/** The LeaseKeepAlive method's definition. */
function keepaliveMethod(client: object): ServiceMethod<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse> {
  return serviceMethod(client, 'LeaseKeepAlive');
}

/** A LeaseKeepAlive stream on grpc-js, as etcd3's generated `leaseKeepAlive()` opens it (no call options: a stream has no deadline). */
function grpcKeepalive(client: Client, metadata: Metadata): ClientDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse> {
  const method = keepaliveMethod(client);
  return client.makeBidiStreamRequest(method.path, method.requestSerialize, method.responseDeserialize, metadata, {});
}

/**
 * A grpc-js stream and its member, open until it ends or fails: grpc-js's `writable` stays
 * true after `cancel()` (or etcd's end), which would keep a member nobody listens on.
 */
function onMember(host: string, stream: NodeJS.EventEmitter): OnMember {
  const state = { writable: true };
  const ended = (): void => {
    state.writable = false;
  };
  stream.once('error', ended);
  stream.once('end', ended);
  stream.once('close', ended);
  return { host, stream: state };
}

/** The member `on`'s stream is on, while that stream is open. */
function openOn(on: OnMember | undefined): string | undefined {
  return on?.stream.writable === true ? on.host : undefined;
}

/** Writes `req` on `stream` and resolves with its first answer; the stream is cancelled after it, after an error, or when `signal` aborts. */
function firstAnswer<Req, Res>(stream: IDuplexStream<Req, Res>, req: Req, signal: AbortSignal): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    let settled = false;
    const settle = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', aborted);
      stream.cancel();
      fn();
    };
    const aborted = (): void => settle(() => reject(signal.reason));
    // (An error after cancel(), as grpc-js may emit one, lands here and is dropped.)
    stream.on('error', (err: Error) => settle(() => reject(err)));
    stream.on('end', () => settle(() => reject(new Error('the stream ended without an answer'))));
    stream.on('data', (res: Res) => settle(() => resolve(res)));
    if (signal.aborted) return aborted();
    signal.addEventListener('abort', aborted, { once: true });
    try {
      stream.write(req);
    } catch (e) {
      settle(() => reject(e as Error));
    }
  });
}

function fromResponse(res: IRangeResponse): RangePage {
  return { header: res.header, kvs: res.kvs, more: res.more };
}
