/** Target parsing and address conversion of the grpc-js resolver (pure; no grpc-js, no etcd). */
import { describe, expect, it } from 'vitest';
import { parseTarget, subchannelAddress } from '../../lib/grpc';
import { policyTakesEmptyList } from '../../lib/grpc/listener';

describe('parseTarget', () => {
  it('SCHEME:///SERVICE and SCHEME:SERVICE name the service', () => {
    expect(parseTarget({ scheme: 'etcd-registry', authority: '', path: 'greeter' })).toEqual({ ok: true, service: 'greeter' });
    expect(parseTarget({ scheme: 'etcd-registry', path: 'a.b_c-1' })).toEqual({ ok: true, service: 'a.b_c-1' });
  });

  it('refuses an authority and an invalid service name, quoting the target', () => {
    const authority = parseTarget({ scheme: 'etcd-registry', authority: 'etcd:2379', path: 'greeter' });
    expect(authority).toMatchObject({ ok: false, reason: expect.stringMatching(/^target "etcd-registry:\/\/etcd:2379\/greeter" is invalid: it names an authority/) });
    for (const path of ['', 'x/services/greeter', '..', 'bad name', 'é']) {
      const result = parseTarget({ scheme: 'etcd-registry', authority: '', path });
      expect(result, path).toMatchObject({ ok: false, reason: expect.stringMatching(/^target "etcd-registry:\/\/\/.*" is invalid: the service name .* is invalid/) });
    }
  });
});

describe('subchannelAddress', () => {
  it('reads host:port, [v6]:port, unix sockets and URLs with a port', () => {
    expect(subchannelAddress('10.0.0.1:50051')).toEqual({ host: '10.0.0.1', port: 50051 });
    expect(subchannelAddress('greeter.internal:443')).toEqual({ host: 'greeter.internal', port: 443 });
    expect(subchannelAddress('[::1]:50051')).toEqual({ host: '::1', port: 50051 });
    expect(subchannelAddress('unix:///tmp/svc.sock')).toEqual({ path: '/tmp/svc.sock' });
    expect(subchannelAddress('unix:/tmp/svc.sock')).toEqual({ path: '/tmp/svc.sock' });
    expect(subchannelAddress('unix:svc.sock')).toEqual({ path: 'svc.sock' });
    expect(subchannelAddress('http://10.0.0.1:8080')).toEqual({ host: '10.0.0.1', port: 8080 });
    expect(subchannelAddress('grpc://[fe80::1]:9000/')).toEqual({ host: 'fe80::1', port: 9000 });
  });

  it('gives undefined for what gRPC cannot dial as is', () => {
    for (const a of ['10.0.0.1', '10.0.0.1:0', '10.0.0.1:65536', '10.0.0.1:http', '::1', '[::1]', '[::1]50051', 'http://10.0.0.1', 'http://10.0.0.1:80/path', 'unix:', 'unix://host/x', 'a/b:80', ':80']) {
      expect(subchannelAddress(a), a).toBeUndefined();
    }
  });
});

describe('policyTakesEmptyList', () => {
  it('is true only for a channel service config that names a policy other than pick_first', () => {
    expect(policyTakesEmptyList(JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }))).toBe(true);
    expect(policyTakesEmptyList(JSON.stringify({ loadBalancingPolicy: 'ROUND_ROBIN' }))).toBe(true);
    expect(policyTakesEmptyList(JSON.stringify({ loadBalancingConfig: [{ pick_first: {} }] }))).toBe(false);
    expect(policyTakesEmptyList(JSON.stringify({ methodConfig: [] }))).toBe(false); // grpc-js's default: pick_first
    expect(policyTakesEmptyList('{not json')).toBe(false);
    expect(policyTakesEmptyList(undefined)).toBe(false);
  });
});
