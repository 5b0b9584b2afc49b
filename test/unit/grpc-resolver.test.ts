/**
 * The grpc-js resolver's holds on the registry (a subscription per resolved service), with a
 * fake registry and a fake grpc-js: every subscription opened is closed once no attached
 * channel resolves the service, and an attached channel's service is always held.
 */
import { describe, expect, it } from 'vitest';
import { registerGrpcResolver, type GrpcJsLike, type RegistryLike } from '../../lib/grpc';

interface Pending {
  resolve(): void;
  reject(e: Error): void;
}

function setup(): { unregister(): void; channel(): { updateResolution(): void; destroy(): void }; pending: Pending[]; open(): number } {
  let open = 0;
  const pending: Pending[] = [];
  const registry: RegistryLike = {
    config: { keyPrefix: 'p' },
    on: () => undefined,
    off: () => undefined,
    subscribe: () =>
      new Promise((resolve, reject) =>
        pending.push({
          resolve: () => {
            open++;
            let closed = false;
            resolve({
              endpoints: [],
              close: async () => {
                if (!closed) open--;
                closed = true;
              },
            });
          },
          reject,
        }),
      ),
  };
  let Resolver: new (target: object, listener: object, options: object) => { updateResolution(): void; destroy(): void };
  const grpc = {
    experimental: { registerResolver: (_scheme: string, c: typeof Resolver) => (Resolver = c) },
    status: { UNAVAILABLE: 14 },
    Metadata: class {},
  } as unknown as GrpcJsLike;
  const registration = registerGrpcResolver(registry, { grpc, scheme: `unit-${Math.random().toString(36).slice(2, 8)}` });
  const listener = { onSuccessfulResolution: () => undefined, onError: () => undefined };
  return {
    unregister: () => registration.unregister(),
    channel: () => new Resolver({ scheme: 'x', authority: '', path: 'svc' }, listener, {}),
    pending,
    open: () => open,
  };
}
const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('grpc resolver: holds on the registry', () => {
  it('a channel that resolves again after unregister() opens no subscription', async () => {
    const s = setup();
    const channel = s.channel();
    s.pending.shift()!.reject(new Error('etcd unreachable'));
    await tick();
    s.unregister();
    channel.updateResolution();
    await tick();
    expect(s.pending).toHaveLength(0);
    channel.destroy();
    expect(s.open()).toBe(0);
  });

  it('destroy() while the subscription opens, then a new resolution: the service is held again, and the first one closed', async () => {
    const s = setup();
    const channel = s.channel();
    channel.destroy();
    channel.updateResolution(); // attached again while the first subscribe() is still out
    await tick();
    s.pending.shift()!.resolve();
    await tick();
    expect(s.pending).toHaveLength(1); // a subscription of its own
    s.pending.shift()!.resolve();
    await tick();
    expect(s.open()).toBe(1);
    channel.destroy();
    await tick();
    expect(s.open()).toBe(0);
  });
});
