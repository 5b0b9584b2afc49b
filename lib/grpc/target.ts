/**
 * Parses a channel target `SCHEME:///SERVICE` (as grpc-js hands it to a resolver, already
 * split into scheme, authority and path) into the service name it names.
 */
import { quote } from '../errors';
import { validateServiceName } from '../keys';

/** What grpc-js passes a resolver: `scheme:[//authority/]path`. */
export interface GrpcTarget {
  readonly scheme?: string;
  readonly authority?: string;
  readonly path: string;
}

export type ParsedTarget = { ok: true; service: string } | { ok: false; reason: string };

/** The target as the application wrote it, for messages. */
export function targetString(target: GrpcTarget): string {
  const scheme = target.scheme === undefined ? '' : `${target.scheme}:`;
  const authority = target.authority === undefined ? '' : `//${target.authority}/`;
  return `${scheme}${authority}${target.path}`;
}

/**
 * `SCHEME:///SERVICE` (or `SCHEME:SERVICE`) gives SERVICE, validated like every service name.
 * An authority is refused: the registry's own etcd connection is the only one used.
 */
export function parseTarget(target: GrpcTarget): ParsedTarget {
  const shown = quote(targetString(target));
  if (target.authority !== undefined && target.authority !== '') {
    return {
      ok: false,
      reason: `target ${shown} is invalid: it names an authority (${quote(target.authority)}); use ${target.scheme ?? 'SCHEME'}:///SERVICE, the registry's own etcd connection is used`,
    };
  }
  try {
    return { ok: true, service: validateServiceName(target.path, 'the service name') };
  } catch (e) {
    return { ok: false, reason: `target ${shown} is invalid: ${(e as Error).message}; expected ${target.scheme ?? 'SCHEME'}:///SERVICE` };
  }
}
