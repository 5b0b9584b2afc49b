import { getEventListeners } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { RegistryError, RegistryTimeoutError } from '../../lib/errors';
import { endpointUrl, fetchWithFailover, type EndpointSource } from '../../lib/fetch';
import type { Endpoint } from '../../lib/types';

const servers: Server[] = [];

afterEach(async () => {
  await Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise<void>((resolve) => {
          s.closeAllConnections();
          s.close(() => resolve());
        }),
    ),
  );
});

interface TestServer {
  address: string;
  /** Requests received, as "METHOD url body". */
  requests: string[];
}

/** A server on 127.0.0.1; `handle` undefined means it never answers. */
async function serve(handle?: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<TestServer> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (body += chunk));
    req.on('end', () => {
      requests.push(`${req.method} ${req.url} ${body}`.trim());
      handle?.(req, res, body);
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { address: `127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

const ok = (name: string) => serve((_req, res) => res.end(name));
const hanging = () => serve();

/** An address where nothing listens (a server opened and closed): ECONNREFUSED. */
async function refused(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `127.0.0.1:${port}`;
}

/** A plain-object EndpointSource: round-robin from the first address, skipping marked-down ones. */
function fakeSource(addresses: string[], service = 'svc') {
  const down = new Set<string>();
  let next = 0;
  const source = {
    picks: [] as string[],
    markedDown: [] as { address: string; seconds: number | undefined }[],
    pickOptions: [] as unknown[],
    async pickAsync(s: string, options?: { strategy?: string; key?: string }): Promise<Endpoint> {
      source.pickOptions.push(options);
      const candidates = addresses.filter((a) => !down.has(a));
      const from = candidates.length > 0 ? candidates : addresses;
      const address = from[next++ % from.length]!;
      source.picks.push(address);
      return { service: s, address, metadata: {}, key: `p/services/${s}/${address}` };
    },
    markDown(endpoint: Pick<Endpoint, 'service' | 'address'>, options?: { seconds?: number }): void {
      expect(endpoint.service).toBe(service);
      down.add(endpoint.address);
      source.markedDown.push({ address: endpoint.address, seconds: options?.seconds });
    },
  };
  return source satisfies EndpointSource;
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

function causes(error: unknown): unknown[] {
  const chain: unknown[] = [];
  for (let e = error; e !== undefined && chain.length < 10; e = (e as { cause?: unknown }).cause) chain.push(e);
  return chain;
}

describe('endpointUrl', () => {
  it('turns host:port into an http URL and resolves the path against a registered URL', () => {
    expect(endpointUrl('127.0.0.1:8080', '/a/b?c=1').href).toBe('http://127.0.0.1:8080/a/b?c=1');
    expect(endpointUrl('localhost:80', '/').href).toBe('http://localhost/');
    expect(endpointUrl('[::1]:9000', '/x').href).toBe('http://[::1]:9000/x');
    expect(endpointUrl('https://api.example.com:8443', '/v1/users').href).toBe('https://api.example.com:8443/v1/users');
    // An absolute path replaces the path of the registered URL (new URL(path, base)).
    expect(endpointUrl('http://10.0.0.1:80/base/', '/x').href).toBe('http://10.0.0.1/x');
  });

  it('rejects addresses that fetch cannot use with ERR_INVALID_ADDRESS', () => {
    for (const address of ['grpc://10.0.0.1:50051', 'unix:///tmp/s.sock', 'host:80/path', 'user@host:80', 'http://', '']) {
      expect(() => endpointUrl(address, '/'), address).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ADDRESS', message: expect.stringContaining(JSON.stringify(address)) }));
    }
  });

  it('rejects a path that is not a single-slash absolute path, quoting it', () => {
    for (const path of ['', 'x', 'http://evil/', '//evil.com/x', '/\\evil.com', '/a b', '/a\nb', '/a\\b']) {
      expect(() => endpointUrl('127.0.0.1:80', path), JSON.stringify(path)).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT', message: expect.stringContaining(`path ${JSON.stringify(path)} is invalid`) }),
      );
    }
  });
});

describe('fetchWithFailover: arguments', () => {
  it('validates every argument before picking anything', async () => {
    const source = fakeSource(['127.0.0.1:1']);
    const cases: [string, string, Record<string, unknown>, string, string][] = [
      ['bad name!', '/', {}, 'ERR_INVALID_SERVICE_NAME', '"bad name!"'],
      ['svc', 'nope', {}, 'ERR_INVALID_ARGUMENT', 'path "nope"'],
      ['svc', '/', { attempts: 0 }, 'ERR_INVALID_ARGUMENT', 'attempts 0'],
      ['svc', '/', { attempts: 101 }, 'ERR_INVALID_ARGUMENT', 'attempts 101'],
      ['svc', '/', { attempts: 1.5 }, 'ERR_INVALID_ARGUMENT', 'attempts 1.5'],
      ['svc', '/', { attempts: '3' }, 'ERR_INVALID_ARGUMENT', 'attempts "3"'],
      ['svc', '/', { attemptTimeout: 0 }, 'ERR_INVALID_ARGUMENT', 'attemptTimeout 0'],
      ['svc', '/', { attemptTimeout: Number.NaN }, 'ERR_INVALID_ARGUMENT', 'attemptTimeout NaN'],
      ['svc', '/', { totalTimeout: -1 }, 'ERR_INVALID_ARGUMENT', 'totalTimeout -1'],
      ['svc', '/', { totalTimeout: 2 ** 31 }, 'ERR_INVALID_ARGUMENT', 'totalTimeout 2147483648'],
      ['svc', '/', { markDownSeconds: -1 }, 'ERR_INVALID_ARGUMENT', 'markDownSeconds -1'],
      ['svc', '/', { strategy: 'fastest' }, 'ERR_INVALID_ARGUMENT', 'strategy "fastest"'],
      ['svc', '/', { key: 42 }, 'ERR_INVALID_ARGUMENT', 'key 42'],
      ['svc', '/', { retryNonIdempotent: 'yes' }, 'ERR_INVALID_ARGUMENT', 'retryNonIdempotent "yes"'],
      ['svc', '/', { signal: 'stop' }, 'ERR_INVALID_ARGUMENT', 'signal "stop"'],
    ];
    for (const [service, path, init, code, text] of cases) {
      const e = await rejection(fetchWithFailover(source, service, path, init as never));
      expect(e, text).toBeInstanceOf(RegistryError);
      expect(e, text).toMatchObject({ code, message: expect.stringContaining(text) });
    }
    await expect(fetchWithFailover({} as never, 'svc', '/')).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    expect(source.picks).toEqual([]);
  });

  it('passes strategy and key to pickAsync (round-robin by default)', async () => {
    const a = await ok('a');
    const source = fakeSource([a.address]);
    await (await fetchWithFailover(source, 'svc', '/')).text();
    await (await fetchWithFailover(source, 'svc', '/', { strategy: 'consistent-hash', key: 'user-1' })).text();
    expect(source.pickOptions).toEqual([{ strategy: 'round-robin' }, { strategy: 'consistent-hash', key: 'user-1' }]);
  });

  it('rejects ERR_INVALID_ADDRESS for a registered address fetch cannot use, without retrying', async () => {
    const source = fakeSource(['grpc://10.0.0.1:50051']);
    await expect(fetchWithFailover(source, 'svc', '/')).rejects.toMatchObject({ code: 'ERR_INVALID_ADDRESS' });
    expect(source.picks).toHaveLength(1);
    expect(source.markedDown).toEqual([]);
  });

  it.each(['127.0.0.1:6000', 'http://127.0.0.1:5060', 'http://127.0.0.1:10080/base'])(
    'rejects ERR_INVALID_ADDRESS naming %s and the bad port when Node\'s fetch refuses the port, without retrying or marking down',
    async (address) => {
      const source = fakeSource([address]);
      const port = /:(\d+)/.exec(address.replace('http://', ''))![1]!;
      const err = await rejection(fetchWithFailover(source, 'svc', '/x', { attempts: 3 }));
      expect(err).toBeInstanceOf(RegistryError);
      expect(err).toMatchObject({ code: 'ERR_INVALID_ADDRESS' });
      const message = (err as Error).message;
      expect(message).toContain(JSON.stringify(address));
      expect(message).toContain(`refuses port ${port}`);
      expect(message).toContain('GET /x to service "svc"');
      expect(source.picks).toEqual([address]);
      expect(source.markedDown).toEqual([]);
    },
  );

  it('lets pickAsync errors through unchanged', async () => {
    const error = new RegistryError('ERR_NO_ENDPOINTS', 'service "svc" has no endpoints');
    const source: EndpointSource = { pickAsync: () => Promise.reject(error), markDown: () => undefined };
    await expect(fetchWithFailover(source, 'svc', '/')).rejects.toBe(error);
  });
});

describe('fetchWithFailover: requests', () => {
  it('sends the request with its method, headers and body, and returns the response', async () => {
    const a = await serve((req, res, body) => res.end(`${req.headers['x-test']}:${body}`));
    const source = fakeSource([a.address]);
    const res = await fetchWithFailover(source, 'svc', '/things?id=1', { method: 'PUT', headers: { 'x-test': 'yes' }, body: 'payload' });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('yes:payload');
    expect(a.requests).toEqual(['PUT /things?id=1 payload']);
  });

  it('returns an HTTP error status as is, without retrying or marking down', async () => {
    const a = await serve((_req, res) => {
      res.statusCode = 503;
      res.end('busy');
    });
    const b = await ok('b');
    const source = fakeSource([a.address, b.address]);
    const res = await fetchWithFailover(source, 'svc', '/');
    expect(res.status).toBe(503);
    expect(await res.text()).toBe('busy');
    expect(source.picks).toEqual([a.address]);
    expect(source.markedDown).toEqual([]);
  });

  it('marks a refused endpoint down and retries on another one', async () => {
    const dead = await refused();
    const b = await ok('b');
    const source = fakeSource([dead, b.address]);
    const res = await fetchWithFailover(source, 'svc', '/hello');
    expect(await res.text()).toBe('b');
    expect(source.picks).toEqual([dead, b.address]);
    expect(source.markedDown).toEqual([{ address: dead, seconds: 10 }]);
    expect(b.requests).toEqual(['GET /hello']);
  });

  it('marks an endpoint that does not answer within attemptTimeout down and retries on another one', async () => {
    const slow = await hanging();
    const b = await ok('b');
    const source = fakeSource([slow.address, b.address]);
    const started = Date.now();
    const res = await fetchWithFailover(source, 'svc', '/', { attemptTimeout: 200, markDownSeconds: 3 });
    expect(await res.text()).toBe('b');
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(slow.requests).toEqual(['GET /']);
    expect(source.markedDown).toEqual([{ address: slow.address, seconds: 3 }]);
  });

  it('leaves the body readable after the attempt timeout: the timeouts bound the wait for the headers', async () => {
    const a = await serve((_req, res) => {
      res.writeHead(200);
      res.write('first ');
      // The body ends well after both timeouts; the headers get ample time even on a loaded machine.
      setTimeout(() => res.end('last'), 2500);
    });
    const source = fakeSource([a.address]);
    const started = Date.now();
    const res = await fetchWithFailover(source, 'svc', '/', { attemptTimeout: 1000, totalTimeout: 1500 });
    expect(await res.text()).toBe('first last');
    expect(Date.now() - started).toBeGreaterThan(1500); // read past every timeout
  });

  it('rejects ERR_REQUEST_FAILED naming every endpoint tried when every attempt fails', async () => {
    const [x, y] = [await refused(), await refused()];
    const source = fakeSource([x, y]);
    const e = await rejection(fetchWithFailover(source, 'svc', '/a', { attempts: 3 }));
    expect(e).toBeInstanceOf(RegistryError);
    expect(e).toMatchObject({ code: 'ERR_REQUEST_FAILED' });
    expect((e as Error).message).toMatch(/^GET \/a to service "svc" failed after 3 attempts \(tried .+, .+, .+\): .*ECONNREFUSED/);
    expect(source.picks).toHaveLength(3);
    for (const address of source.picks) expect((e as Error).message).toContain(address);
    expect(causes(e).some((c) => (c as { code?: string }).code === 'ECONNREFUSED')).toBe(true);
  });

  it('does not retry a POST, but retries it with retryNonIdempotent (replaying the body)', async () => {
    const dead = await refused();
    const b = await ok('b');
    const source = fakeSource([dead, b.address]);
    const e = await rejection(fetchWithFailover(source, 'svc', '/orders', { method: 'POST', body: 'order-1' }));
    expect(e).toMatchObject({ code: 'ERR_REQUEST_FAILED', message: expect.stringContaining('after 1 attempt (tried') });
    expect((e as Error).message).toContain('not retried: POST is not idempotent');
    expect(source.picks).toEqual([dead]);
    expect(source.markedDown.map((m) => m.address)).toEqual([dead]);
    expect(b.requests).toEqual([]);

    const again = fakeSource([dead, b.address]);
    const res = await fetchWithFailover(again, 'svc', '/orders', { method: 'POST', body: 'order-1', retryNonIdempotent: true });
    expect(await res.text()).toBe('b');
    expect(again.picks).toEqual([dead, b.address]);
    expect(b.requests).toEqual(['POST /orders order-1']);
  });

  it('does not retry a request whose body is a stream', async () => {
    const dead = await refused();
    const b = await ok('b');
    const source = fakeSource([dead, b.address]);
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('chunk'));
        controller.close();
      },
    });
    const init = { method: 'PUT', body, duplex: 'half' } as RequestInit;
    const e = await rejection(fetchWithFailover(source, 'svc', '/upload', init));
    expect(e).toMatchObject({ code: 'ERR_REQUEST_FAILED', message: expect.stringContaining('not retried: the body is a stream') });
    expect(source.picks).toEqual([dead]);
  });

  it('stops at once on the caller abort, with its reason, without marking down or retrying', async () => {
    const [x, y] = [await hanging(), await hanging()];
    const source = fakeSource([x.address, y.address]);
    const controller = new AbortController();
    const reason = new Error('caller gave up');
    setTimeout(() => controller.abort(reason), 100);
    const started = Date.now();
    const e = await rejection(fetchWithFailover(source, 'svc', '/', { signal: controller.signal, attemptTimeout: 10_000 }));
    expect(e).toBe(reason);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(source.picks).toEqual([x.address]);
    expect(source.markedDown).toEqual([]);
  });

  it('rejects with the reason of an already aborted signal before picking', async () => {
    const source = fakeSource(['127.0.0.1:1']);
    const reason = new Error('already');
    await expect(fetchWithFailover(source, 'svc', '/', { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    expect(source.picks).toEqual([]);
  });

  it('stops at once on the caller abort while pickAsync() is still waiting', async () => {
    const source: EndpointSource = { pickAsync: () => new Promise<never>(() => undefined), markDown: () => undefined };
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('stop')), 50);
    await expect(fetchWithFailover(source, 'svc', '/', { signal: controller.signal })).rejects.toThrow('stop');
  });

  it('rejects a RegistryTimeoutError naming the service and the attempts when totalTimeout passes', async () => {
    const [x, y] = [await hanging(), await hanging()];
    const source = fakeSource([x.address, y.address]);
    const started = Date.now();
    // Attempts of 300 ms within 1 s: 2 to 4 of them, with room for timer lag on a loaded machine.
    const e = await rejection(fetchWithFailover(source, 'svc', '/slow', { attempts: 10, attemptTimeout: 300, totalTimeout: 1000 }));
    const elapsed = Date.now() - started;
    expect(e).toBeInstanceOf(RegistryTimeoutError);
    expect(e).toMatchObject({ code: 'ERR_TIMEOUT' });
    expect((e as Error).message).toMatch(/^GET \/slow to service "svc" timed out after 1000 ms and \d attempts \(tried /);
    expect((e as Error).message).toContain(`and ${source.picks.length} attempts`);
    expect(source.picks.length).toBeGreaterThanOrEqual(2);
    expect(source.picks.length).toBeLessThanOrEqual(4);
    expect(elapsed).toBeGreaterThanOrEqual(990);
    expect(elapsed).toBeLessThan(5000);
  });

  it('times out while pickAsync() is still waiting, with 0 attempts', async () => {
    const source: EndpointSource = { pickAsync: () => new Promise<never>(() => undefined), markDown: () => undefined };
    await expect(fetchWithFailover(source, 'svc', '/', { totalTimeout: 100 })).rejects.toMatchObject({
      code: 'ERR_TIMEOUT',
      message: 'GET / to service "svc" timed out after 100 ms and 0 attempts',
    });
  });
});

describe('fetchWithFailover: timers', () => {
  const timeouts = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

  it('an attempt whose begin() throws (the registry closed just then) leaves no attempt timer behind', async () => {
    const { address } = await ok('a');
    const source: EndpointSource = {
      pickAsync: async () => Object.freeze({ service: 'svc', address, metadata: {}, key: `p/services/svc/${address}` }),
      markDown: () => undefined,
      begin: () => {
        throw new RegistryError('ERR_REGISTRY_CLOSED', 'registry.begin() was called after close()');
      },
    };
    const before = timeouts();
    await expect(fetchWithFailover(source, 'svc', '/', { attemptTimeout: 60_000 })).rejects.toThrow(/after close/);
    expect(timeouts() - before).toBe(0);
  });
});

describe('fetchWithFailover: retries', () => {
  it('a retry goes to an endpoint not tried yet while there is one, even from a source that always picks the same (consistent-hash, nothing marked down)', async () => {
    const [a, b] = [await refused(), await refused()];
    const endpoint = (address: string): Endpoint => Object.freeze({ service: 'svc', address, metadata: {}, key: `p/services/svc/${address}` });
    const source: EndpointSource = {
      // A key that maps to `a` every time, as consistent-hash does; the filter is the only way off it.
      pickAsync: async (_service, options) => {
        const passing = [a, b].filter((x) => options?.filter === undefined || options.filter(endpoint(x)));
        if (passing.length === 0) throw new RegistryError('ERR_NO_ENDPOINTS', 'none passes the filter');
        return endpoint(passing[0]!);
      },
      markDown: () => undefined,
    };
    const error = (await fetchWithFailover(source, 'svc', '/', { attempts: 3, markDownSeconds: 0 }).catch((e: unknown) => e)) as RegistryError;
    expect(error.code).toBe('ERR_REQUEST_FAILED');
    // Both, then any again once both were tried.
    expect(error.message).toContain(`tried ${a}, ${b}, ${a}`);
  });
});


describe('registry.fetch(): memory', () => {
  it("the caller's signal still ends the body being read after the call returned (headers sent, the body stalled)", async () => {
    const stalled = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('part of it');
    });
    const app = new AbortController();
    const res = await fetchWithFailover(fakeSource([stalled.address]), 'svc', '/', { signal: app.signal });
    expect(res.status).toBe(200);
    const body = res.text();
    setTimeout(() => app.abort(new Error('shutting down')), 50);
    await expect(body).rejects.toThrow('shutting down');
  });

  it("puts one listener at most on the caller's signal, however many calls it is given to at once (an application's shutdown signal), and no signal of its own", async () => {
    const a = await serve((_req, res) => setTimeout(() => res.end('a'), 20));
    const refusing = await refused();
    const source = fakeSource([refusing, a.address]);
    const app = new AbortController();
    const warnings: string[] = [];
    const onWarning = (w: Error): number => warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      for (let i = 0; i < 20; i++) expect(await (await fetchWithFailover(source, 'svc', '/', { signal: app.signal, markDownSeconds: 0 })).text()).toBe('a');
      const many = Array.from({ length: 50 }, async () => (await fetchWithFailover(source, 'svc', '/', { signal: app.signal, markDownSeconds: 0 })).text());
      expect(getEventListeners(app.signal, 'abort').length).toBeLessThanOrEqual(1);
      expect(new Set(await Promise.all(many))).toEqual(new Set(['a']));
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings).toEqual([]); // no MaxListenersExceededWarning
    } finally {
      process.off('warning', onWarning);
    }
    // AbortSignal.any() would have made it hold two signals a call (Node 20 never lets them go).
    const dependants = Object.getOwnPropertySymbols(app.signal).find((sym) => sym.description === 'kDependantSignals');
    expect(dependants === undefined ? 0 : (app.signal as unknown as Record<symbol, Set<unknown>>)[dependants]!.size).toBe(0);
    // And it still stops a call in flight.
    const slow = await hanging();
    const call = fetchWithFailover(fakeSource([slow.address]), 'svc', '/', { signal: app.signal });
    await new Promise((resolve) => setTimeout(resolve, 50));
    app.abort(new Error('shutting down'));
    await expect(call).rejects.toThrow('shutting down');
  });

  it('keeps nothing per call once it settled (20,000 calls given one signal: heap flat, no signal left behind)', async () => {
    const { Registry } = await import('../../lib/index.js');
    const { setFlagsFromString } = await import('node:v8');
    const { runInNewContext } = await import('node:vm');
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    // Nothing listens there, and nothing dials it: every pick fails at once.
    const registry = new Registry({ etcdEndpoints: 'http://127.0.0.1:9', env: {}, shutdownSignals: [] });
    const app = new AbortController(); // one signal for every call, as an application's shutdown signal
    (registry as unknown as { pickAsync: () => Promise<never> }).pickAsync = () => Promise.reject(new RegistryError('ERR_NO_ENDPOINTS', 'none'));
    const round = async (): Promise<void> => {
      for (let i = 0; i < 10_000; i++) await registry.fetch('svc', '/x', { signal: app.signal }).catch(() => undefined);
    };
    // Collected, and the finalizers AbortSignal.any() registers run (they need turns of the loop).
    const heap = async (): Promise<number> => {
      for (let i = 0; i < 3; i++) {
        gc();
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      return process.memoryUsage().heapUsed;
    };
    try {
      await round();
      const before = await heap();
      await round();
      await round();
      // Keeping a signal per call (about 2 KB each) would add some 40 MB here.
      expect(((await heap()) - before) / 1e6).toBeLessThan(8);
      expect((registry as unknown as { fetches: Set<unknown> }).fetches.size).toBe(0);
    } finally {
      await registry.close();
    }
  }, 60_000);
});
