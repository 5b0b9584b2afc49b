/**
 * Feeds the view's state from etcd: one paged read of `$PREFIX/services/` at a
 * revision, then one watch from the next revision on the library's shared
 * watch stream (which resumes after outages and rebuilds a stalled client).
 *
 * The web view reads etcd itself rather than through a Registry because it
 * shows what the Registry's lists do not keep: the lease of every key and its
 * revisions. etcd puts both on every key/value of a range and of a watch event,
 * so they cost nothing extra. When etcd ends the watch (compacted history, lost
 * data), the prefix is read again and the difference reported, as the library
 * does. Read-only: range and watch only.
 */
import type { IEvent } from 'etcd3';
import type { RangeKeyValue } from '../etcd/wire';
import { EtcdPermissionDeniedError, Range } from 'etcd3';
import { cappedBackoff } from '../backoff';
import { isDoctorProbeKey } from '../cli/doctor';
import { leaseHex } from '../cli/output';
import { type Connection, isUnreachableError, watchRefusal } from '../etcd/connection';
import { type KeySpace, SERVICE_NAME_PATTERN, decodeEndpoint } from '../keys';
import { logger } from '../log';
import { readPrefix } from '../etcd/read-prefix';
import { delay } from '../time';
import type { WatchStream, WatchTarget } from '../etcd/watch-stream';
import type { EndpointRow, ViewState } from './state';

const debug = logger('ui');

type Row = Omit<EndpointRow, 'since' | 'atStart'>;

export class RegistrySource implements WatchTarget {
  readonly name = 'web view';
  readonly key: Buffer;
  readonly rangeEnd: Buffer;
  nextRevision = 0;
  private resyncing = false;
  private closed = false;

  constructor(
    private readonly keys: KeySpace,
    private readonly conn: Connection,
    private readonly stream: WatchStream,
    private readonly state: ViewState,
    private readonly onError: (e: Error) => void,
  ) {
    const range = Range.prefix(keys.root);
    this.key = range.start;
    this.rangeEnd = range.end;
    conn.on('unreachable', this.onUnreachable);
    conn.on('reachable', this.onReachable);
    conn.on('reset', this.onReset);
  }

  /** The revision the view is at: the last event or progress notification received. */
  get revision(): number {
    return Math.max(0, this.nextRevision - 1);
  }

  /** The first read; rejects when it fails (the caller decides whether to go on). */
  async start(): Promise<void> {
    await this.load();
  }

  private async load(): Promise<void> {
    const rows: Row[] = [];
    const skipped: string[] = [];
    const snapshot = await readPrefix(this.conn, this.keys.root, (kvs) => {
      for (const kv of kvs) {
        const decoded = this.decode(kv);
        if (decoded === 'ignore') continue;
        if (decoded === 'skip') skipped.push(kv.key.toString());
        else rows.push(decoded);
      }
    });
    if (this.closed) return;
    this.state.replaceAll(rows, skipped, snapshot.revision);
    this.nextRevision = snapshot.revision + 1;
    this.stream.add(this);
    debug('read %s at revision %d: %d endpoint(s), %d skipped', this.keys.root, snapshot.revision, rows.length, skipped.length);
  }

  onEvents(events: IEvent[]): void {
    if (this.closed) return;
    const now = Date.now();
    for (const event of events) {
      const key = event.kv.key.toString();
      if (event.type === 'Delete') {
        this.state.remove(key, now);
        continue;
      }
      const decoded = this.decode(event.kv);
      if (decoded === 'ignore') continue;
      if (decoded === 'skip') this.state.skip(key, now);
      else this.state.put(decoded, now);
    }
    this.state.setRevision(this.revision);
  }

  onLost(reason: string): void {
    // A refusal for permission is retried slowly; anything else (compaction) at once.
    void this.resync(reason, watchRefusal(reason) === 'permission' ? 5000 : 0);
    if (watchRefusal(reason) === 'permission') {
      this.onError(this.conn.error(new EtcdPermissionDeniedError(reason), `watch the prefix "${this.keys.root}"`));
    }
  }

  private onUnreachable = (error: Error): void => this.state.setReachable(false, error.message);
  private onReachable = (): void => this.state.setReachable(true);
  private onReset = (reason: string): void => void this.resync(`etcd lost its data: ${reason}`);

  /** Reads the prefix again and restarts the watch; retried until it works or the view closes. */
  private async resync(reason: string, delayMs = 0): Promise<void> {
    if (this.closed || this.resyncing) return;
    this.resyncing = true;
    this.stream.remove(this);
    debug('resync: %s', reason);
    let step = cappedBackoff().next();
    try {
      if (delayMs > 0) await delay(delayMs, this.conn.signal);
      for (;;) {
        try {
          await this.load();
          return;
        } catch (e) {
          if (this.closed) return;
          if (!isUnreachableError(e)) this.onError(this.conn.error(e, `re-read the prefix "${this.keys.root}"`));
          await delay(step.duration, this.conn.signal);
          step = step.next(undefined);
        }
      }
    } catch {
      // closed while waiting
    } finally {
      this.resyncing = false;
    }
  }

  /** An endpoint row, 'skip' for a record that is not a valid endpoint, 'ignore' for a doctor's probe. */
  private decode(kv: RangeKeyValue): Row | 'skip' | 'ignore' {
    const key = kv.key.toString();
    const service = this.keys.serviceOf(key);
    if (service === undefined || !SERVICE_NAME_PATTERN.test(service)) return isDoctorProbeKey(this.keys, key) ? 'ignore' : 'skip';
    const result = decodeEndpoint(service, this.keys.servicePrefix(service), key, kv.value);
    if (!result.ok) return 'skip';
    return {
      key,
      service,
      address: result.endpoint.address,
      metadata: spacedJson(result.endpoint.metadata),
      lease: leaseHex(kv.lease) ?? '',
      createRevision: Number(kv.create_revision),
      modRevision: Number(kv.mod_revision),
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stream.remove(this);
    this.conn.off('unreachable', this.onUnreachable);
    this.conn.off('reachable', this.onReachable);
    this.conn.off('reset', this.onReset);
  }
}

/** JSON on one line with a space after each `,` and `:` (`{ "zone": "a", "weight": 2 }`): still JSON, and it wraps at spaces. */
export function spacedJson(value: unknown): string {
  // Line breaks only come from the indentation: JSON escapes those inside strings.
  return JSON.stringify(value, null, 1).replace(/\n */g, ' ');
}
