/**
 * A gRPC server that registers itself with the port bindAsync gave it, and deregisters on
 * SIGTERM (then, after REGISTRY_DRAIN_SECONDS of still serving, ends).
 *
 *   REGISTRY_SERVICE_NAME=greeter REGISTRY_DRAIN_SECONDS=1 npx tsx examples/grpc-service.ts
 */
import { Server, ServerCredentials, status, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { Registry } from '../lib';
import { greeterService, type HelloReply, type HelloRequest } from './grpc-greeter';

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 0); // 0: any free port

async function main(): Promise<void> {
  const server = new Server();
  let address = '';
  server.addService(greeterService, {
    sayHello(call: ServerUnaryCall<HelloRequest, HelloReply>, callback: sendUnaryData<HelloReply>) {
      if (typeof call.request?.name !== 'string') {
        callback({ code: status.INVALID_ARGUMENT, details: 'expected { name: string }' });
        return;
      }
      callback(null, { message: `hello ${call.request.name}`, server: address });
    },
  });
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))),
  );
  address = `${host}:${bound}`;

  const registry = new Registry();
  const endpoint = await registry.register({ service: process.env.REGISTRY_SERVICE_NAME ?? 'greeter', address });
  console.log(`grpc-service: serving ${endpoint.service} at ${address}, registered as ${endpoint.key}`);
  // On SIGTERM the registry deregisters at once, keeps the process (and this server) up for
  // REGISTRY_DRAIN_SECONDS while clients move to the other servers, then ends it.
}

main().catch((e: unknown) => {
  console.error(`grpc-service: ${(e as Error).stack}`);
  process.exit(1);
});
