/**
 * vitest globalSetup for the `integration` project: one shared etcd for the whole run
 * (REGISTRY_TEST_ETCD_ENDPOINTS, else a Docker container, else the `etcd` binary), after the
 * version check of ./etcd-version-setup. With REGISTRY_TEST_VIA_GRPC_PROXY=1 the tests reach
 * it through `etcd grpc-proxy` instead, as large fleets do.
 * Tests read its endpoints with `etcdEndpoints()` from ./env (vitest `inject`).
 */
import type { TestProject } from 'vitest/node' with { 'resolution-mode': 'import' };
import { startEtcd, type StartedEtcd } from './etcd';
import { etcdVersionOnce } from './etcd-version-setup';
import { GrpcProxy } from './grpc-proxy';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Comma-separated client URLs of the shared test etcd (or of the gRPC proxy in front of it). */
    etcdEndpoints: string;
  }
}

let started: StartedEtcd | undefined;
let proxy: GrpcProxy | undefined;

export async function setup(project: TestProject): Promise<void> {
  await etcdVersionOnce();
  started = await startEtcd();
  if (process.env.REGISTRY_TEST_VIA_GRPC_PROXY === '1') {
    proxy = new GrpcProxy(started.endpoints);
    await proxy.start();
    console.log(`tests reach etcd through grpc-proxy ${proxy.url} -> ${started.endpoints}`);
  }
  project.provide('etcdEndpoints', proxy?.url ?? started.endpoints);
}

export async function teardown(): Promise<void> {
  await proxy?.stop();
  proxy = undefined;
  const s = started;
  started = undefined;
  await s?.stop();
}
