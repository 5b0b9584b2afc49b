/**
 * The live web view of a registry (`etcd-service-registry ui`): wires the
 * state (lib/ui/state.ts), its feed from etcd (source.ts), the lease clock
 * (leases.ts), the server-sent events (sse.ts) and the HTTP server (server.ts)
 * to one Connection. Internal to the command line; not part of the library's API.
 */
import type { Connection } from '../etcd/connection';
import type { KeySpace } from '../keys';
import { WatchStream } from '../etcd/watch-stream';
import { LeaseClock } from './leases';
import { listen } from './server';
import { RegistrySource } from './source';
import { EventFeed } from './sse';
import { ViewState } from './state';

export interface WebViewOptions {
  readonly conn: Connection;
  readonly keys: KeySpace;
  /** The configured prefix, and the etcd endpoints as shown in the footer. */
  readonly prefix: string;
  readonly etcd: string;
  readonly host: string;
  readonly port: number;
  /** REGISTRY_WATCH_SILENCE_SECONDS, in ms (see WatchStream). */
  readonly watchSilenceMs: number;
  /** A background failure that is being retried (a refused watch, a failed re-read). */
  readonly onError: (error: Error) => void;
}

export interface WebView {
  readonly url: string;
  readonly state: ViewState;
  readonly leases: LeaseClock;
  close(): Promise<void>;
}

/** Reads the prefix, starts the watch, then listens; rejects (and releases everything) when any of it fails. */
export async function openWebView(options: WebViewOptions): Promise<WebView> {
  const { conn, keys } = options;
  const state = new ViewState(options.prefix, options.etcd);
  const stream = new WatchStream(conn, options.onError, options.watchSilenceMs);
  const source = new RegistrySource(keys, conn, stream, state, options.onError);
  let feed: EventFeed | undefined;
  const leases = new LeaseClock(conn, () => state.leases(), () => (feed?.size ?? 0) > 0);
  feed = new EventFeed(state, leases, () => source.revision);
  const release = (): void => {
    leases.close();
    feed.close();
    source.close();
    stream.close();
  };
  try {
    await source.start();
    const server = await listen(options.host, options.port, state, feed);
    feed.start();
    leases.start();
    return {
      url: server.url,
      state,
      leases,
      close: async () => {
        release();
        await server.close();
      },
    };
  } catch (e) {
    release();
    throw e;
  }
}
