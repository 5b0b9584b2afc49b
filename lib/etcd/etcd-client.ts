/**
 * etcd3's client with one more call: `rangePage()`, a range read whose answer is
 * decoded by lib/etcd/range-page.ts instead of protobufjs (the cold read of a big prefix
 * spends most of its CPU there). It goes through etcd3's own connection handling
 * (member choice, per-member policy, auth metadata, error types) and the client's
 * failover policy and deadline, as every other call does.
 */
import { Etcd3, EtcdInvalidAuthTokenError, castGrpcError, type IOptions, type IRangeResponse } from 'etcd3';
import type { IPolicy } from 'cockatiel';
import { decodeRangeResponse, encodeRangeRequest, type RangePage, type RangePageRequest } from './range-page';

const RANGE_METHOD = '/etcdserverpb.KV/Range';

/** What a call's gRPC options are made of: its deadline (see Connection's callDeadline). */
export type CallDeadline = () => number;

export class EtcdClient extends Etcd3 {
  constructor(
    options: IOptions,
    /** The policy etcd3 runs every unary call in (`faultHandling.global`). */
    private readonly global: IPolicy,
    private readonly deadline: CallDeadline,
  ) {
    super({ ...options, faultHandling: { ...options.faultHandling, global } });
  }

  /** One page of a range read, as RangePage. */
  async rangePage(req: RangePageRequest): Promise<RangePage> {
    // One order of the members for every attempt of this call, as etcd3's own calls have:
    // each retry goes to the next member, not to a fresh random pick.
    type MemberOrder = Parameters<typeof this.pool.withConnection>[2];
    const pool: { shuffledHosts?: () => MemberOrder } = this.pool as never; // private in etcd3's types
    const order = pool.shuffledHosts?.();
    try {
      return await this.global.execute(() =>
        this.pool.withConnection(
          'KV',
          ({ client, metadata }) =>
            new Promise<RangePage>((resolve, reject) => {
              client.makeUnaryRequest(RANGE_METHOD, encodeRangeRequest, decodeRangeResponse, req, metadata, { deadline: this.deadline() }, (err, res) => {
                if (err) reject(castGrpcError(err));
                else resolve(res!);
              });
            }),
          order,
        ),
      );
    } catch (e) {
      // etcd forgot the auth token (it restarted): etcd3's own call renews it and asks again.
      if (!(e instanceof EtcdInvalidAuthTokenError)) throw e;
      return fromResponse(await this.kv.range({ key: req.key, range_end: req.rangeEnd, limit: req.limit, revision: req.revision }));
    }
  }
}

function fromResponse(res: IRangeResponse): RangePage {
  return { header: res.header, kvs: res.kvs, more: res.more };
}
