/**
 * Which etcd members grpc-js reaches through an HTTP proxy, as the registry decides it
 * (lib/etcd/http-proxy.ts), against grpc-js's own decision (its mapProxyName, which reads
 * process.env): where the registry goes straight to etcd on its own sessions, grpc-js must too.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { tunnelledByGrpcJs, type ProxyVariables } from '../../lib/etcd/http-proxy';

const grpcProxy = require('@grpc/grpc-js/build/src/http_proxy.js') as {
  mapProxyName(target: { scheme?: string; authority?: string; path: string }, options: object): { extraOptions: Record<string, unknown> };
};
const NAMES = ['grpc_proxy', 'https_proxy', 'http_proxy', 'no_grpc_proxy', 'no_proxy'] as const;
const saved = Object.fromEntries(NAMES.map((n) => [n, process.env[n]]));

/** Whether grpc-js (the installed version) tunnels its connection to `hostPort` with `env` as process.env. */
function grpcTunnels(hostPort: string, env: ProxyVariables): boolean {
  for (const n of NAMES) delete process.env[n];
  Object.assign(process.env, env);
  return 'grpc.http_connect_target' in grpcProxy.mapProxyName({ scheme: 'dns', path: hostPort }, {}).extraOptions;
}

describe('tunnelledByGrpcJs', () => {
  afterEach(() => {
    for (const n of NAMES) {
      if (saved[n] === undefined) delete process.env[n];
      else process.env[n] = saved[n];
    }
  });

  const proxy = 'http://127.0.0.1:3128';
  const cases: [string, readonly string[], ProxyVariables, boolean][] = [
    ['no proxy variable', ['http://127.0.0.1:2379'], {}, false],
    ['a proxy variable set empty', ['http://127.0.0.1:2379'], { http_proxy: '' }, false],
    ['http_proxy', ['http://127.0.0.1:2379'], { http_proxy: proxy }, true],
    ['https_proxy', ['https://etcd-0:2379'], { https_proxy: proxy }, true],
    ['grpc_proxy', ['127.0.0.1:2379'], { grpc_proxy: proxy }, true],
    ['the member exempted by no_proxy', ['http://127.0.0.1:2379'], { http_proxy: proxy, no_proxy: 'localhost,127.0.0.1' }, false],
    ['every member exempted', ['http://etcd-0:2379', 'http://etcd-1:2379'], { http_proxy: proxy, no_proxy: 'etcd-1,etcd-0' }, false],
    ['one member of two not exempted', ['http://etcd-0:2379', 'http://etcd-1:2379'], { http_proxy: proxy, no_proxy: 'etcd-0' }, true],
    ['no_grpc_proxy before no_proxy', ['http://127.0.0.1:2379'], { http_proxy: proxy, no_grpc_proxy: 'etcd-0', no_proxy: '127.0.0.1' }, true],
    ['no_grpc_proxy', ['http://127.0.0.1:2379'], { http_proxy: proxy, no_grpc_proxy: '127.0.0.1', no_proxy: 'etcd-0' }, false],
    ['an IPv6 member', ['http://[::1]:2379'], { http_proxy: proxy, no_proxy: '::1' }, false],
    ['an entry with a space before it (grpc-js takes it as written)', ['http://127.0.0.1:2379'], { http_proxy: proxy, no_proxy: 'localhost, 127.0.0.1' }, true],
    // Exempt by grpc-js 1.12 and later only: kept on grpc-js, which then goes straight to it too.
    ['a name suffix', ['http://etcd-0.etcd.svc:2379'], { http_proxy: proxy, no_proxy: '.svc' }, true],
    ['an IPv4 CIDR range', ['http://127.0.0.1:2379'], { http_proxy: proxy, no_proxy: '127.0.0.0/8' }, true],
  ];

  for (const [what, endpoints, env, tunnelled] of cases) {
    it(`${what}: ${tunnelled ? 'on grpc-js' : 'straight to etcd'}`, () => {
      expect(tunnelledByGrpcJs(endpoints, env)).toBe(tunnelled);
      // Never straight to a member grpc-js would reach through the proxy.
      if (!tunnelled) {
        for (const endpoint of endpoints) {
          const hostPort = endpoint.replace(/^https?:\/\//, '');
          expect(grpcTunnels(hostPort, env), hostPort).toBe(false);
        }
      }
    });
  }
});
