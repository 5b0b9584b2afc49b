/**
 * `etcd-service-registry/grpc`: a name resolver for `@grpc/grpc-js` (an optional peer
 * dependency, `>=1.10 <2`) backed by a Registry's local endpoint lists.
 */
export { registerGrpcResolver, DEFAULT_SCHEME, type GrpcResolverOptions, type GrpcResolverRegistration, type RegistryLike } from './resolver';
export { subchannelAddress, type GrpcSubchannelAddress, type RegistryGrpcEndpoint } from './addresses';
export { parseTarget, type GrpcTarget, type ParsedTarget } from './target';
export type { GrpcJsLike } from './module';
