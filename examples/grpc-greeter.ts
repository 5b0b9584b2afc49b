/**
 * The Greeter service of the gRPC examples, defined by hand (JSON messages, no .proto and no
 * code generation): `greeter.Greeter/SayHello({ name }) -> { message, server }`.
 */
import { makeGenericClientConstructor, type ServiceDefinition } from '@grpc/grpc-js';

export interface HelloRequest {
  name: string;
}

export interface HelloReply {
  message: string;
  /** The address of the server that answered. */
  server: string;
}

const json = {
  serialize: (value: unknown): Buffer => Buffer.from(JSON.stringify(value)),
  deserialize: (bytes: Buffer): never => JSON.parse(bytes.toString()) as never,
};

export const greeterService = {
  sayHello: {
    path: '/greeter.Greeter/SayHello',
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
} satisfies ServiceDefinition;

/** A client class for the service, like the ones generated from a .proto. */
export const GreeterClient = makeGenericClientConstructor(greeterService, 'greeter.Greeter');
