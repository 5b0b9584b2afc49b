/**
 * A gRPC client that finds its servers through the registry: the channel's target is
 * `etcd-registry:///SERVICE`, calls are spread round robin over the endpoints registered, and
 * follow every change of the list.
 *
 *   REGISTRY_TARGET=greeter npx tsx examples/grpc-client.ts
 */
import { credentials, type ServiceError } from '@grpc/grpc-js';
import { Registry } from '../lib';
import { registerGrpcResolver } from '../lib/grpc';
import { GreeterClient, type HelloReply } from './grpc-greeter';

const target = process.env.REGISTRY_TARGET ?? 'greeter';
const intervalMs = Number(process.env.REQUEST_INTERVAL_MS ?? 500);

const registry = new Registry();
const resolver = registerGrpcResolver(registry); // scheme 'etcd-registry'
const client = new GreeterClient(`${resolver.scheme}:///${target}`, credentials.createInsecure());

const timer = setInterval(() => {
  client.sayHello({ name: 'world' }, { deadline: Date.now() + 2000 }, (error: ServiceError | null, reply?: HelloReply) => {
    if (error) console.log(`grpc-client: ${error.code} ${error.details}`);
    else console.log(`grpc-client: ${reply!.message} (from ${reply!.server})`);
  });
}, intervalMs);

process.once('SIGINT', () => {
  clearInterval(timer);
  client.close();
  resolver.unregister();
  void registry.close();
});
