/**
 * The address of a listening server, for registerServer(): the port it was bound
 * to, and as host the address it was bound to, or, when it listens on every
 * interface (0.0.0.0, ::), this host's first non-internal IPv4 address, as for
 * REGISTRY_SERVICE_PORT.
 */
import type { AddressInfo } from 'node:net';
import { firstIPv4 } from '../config';
import { RegistryError, quote } from '../errors';
import type { EndpointInput } from '../types';

/** node:http, node:https and node:net servers, or anything shaped like them. */
export interface ListeningServer {
  readonly listening: boolean;
  address(): AddressInfo | string | null;
  once(event: 'listening' | 'close' | 'error', listener: (...args: unknown[]) => void): unknown;
  off?(event: 'listening' | 'close' | 'error', listener: (...args: unknown[]) => void): unknown;
}

/** What registerServer() takes besides the server: the address defaults to the server's. */
export type ServerRegistration = EndpointInput;

const WILDCARDS = new Set(['0.0.0.0', '::', '::0', '0:0:0:0:0:0:0:0']);

/** Resolves with the bound address once the server listens; rejects if it fails or closes first. */
export function listeningAddress(server: ListeningServer): Promise<AddressInfo> {
  if (typeof server !== 'object' || server === null || typeof server.address !== 'function' || typeof server.once !== 'function') {
    return Promise.reject(new RegistryError('ERR_INVALID_ARGUMENT', `registerServer() expects a server with address() and listening, got ${quote(server)}`));
  }
  const read = (): AddressInfo => {
    const bound = server.address();
    if (bound === null || typeof bound !== 'object' || typeof bound.port !== 'number') {
      throw new RegistryError('ERR_INVALID_ARGUMENT', `registerServer() needs a TCP server; it listens on ${quote(bound)}`);
    }
    return bound;
  };
  if (server.listening) return Promise.resolve().then(read);
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      server.off?.('listening', onListening);
      server.off?.('error', onError);
      server.off?.('close', onClose);
    };
    const onListening = (): void => {
      cleanup();
      try {
        resolve(read());
      } catch (e) {
        reject(e);
      }
    };
    const onError = (e: unknown): void => {
      cleanup();
      reject(new RegistryError('ERR_INVALID_ARGUMENT', `registerServer(): the server failed to listen: ${(e as Error)?.message ?? quote(e)}`, { cause: e }));
    };
    const onClose = (): void => {
      cleanup();
      reject(new RegistryError('ERR_INVALID_ARGUMENT', 'registerServer(): the server closed before it listened'));
    };
    server.once('listening', onListening);
    server.once('error', onError);
    server.once('close', onClose);
  });
}

export function serverAddress(bound: AddressInfo): string {
  const host = WILDCARDS.has(bound.address) ? firstIPv4() : bound.address;
  return host.includes(':') ? `[${host}]:${bound.port}` : `${host}:${bound.port}`;
}
