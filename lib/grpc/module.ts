/**
 * The part of `@grpc/grpc-js` the resolver uses: only its public exports (`experimental`,
 * `status`, `Metadata`), typed structurally so that any release from 1.10 to 1.x fits.
 * Loaded on first use, so importing this module never requires grpc-js by itself.
 */
import { RegistryError } from '../errors';

/** What `registerGrpcResolver()` needs of `@grpc/grpc-js` (any release `>=1.10 <2`). */
export interface GrpcJsLike {
  experimental: {
    // Method syntax: each release's own ResolverConstructor type is accepted.
    registerResolver(scheme: string, resolverClass: never): void;
  };
  status: { UNAVAILABLE: number };
  Metadata: new () => unknown;
}

let loaded: GrpcJsLike | undefined;

/** `require('@grpc/grpc-js')`, resolved from this package like any peer dependency. */
export function defaultGrpcJs(): GrpcJsLike {
  if (loaded) return loaded;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    loaded = require('@grpc/grpc-js') as GrpcJsLike;
  } catch (e) {
    throw new RegistryError(
      'ERR_INVALID_ARGUMENT',
      `registerGrpcResolver() needs the optional peer dependency @grpc/grpc-js (>=1.10 <2): install it, or pass options.grpc (${(e as Error).message.split('\n')[0]})`,
      { cause: e },
    );
  }
  return loaded;
}
