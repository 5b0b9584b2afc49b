/**
 * vitest globalSetup for the `integration` project: one shared etcd for the whole run
 * (REGISTRY_TEST_ETCD_ENDPOINTS, else a Docker container, else the `etcd` binary), after the
 * version check of ./etcd-version-setup.
 * Tests read its endpoints with `etcdEndpoints()` from ./env (vitest `inject`).
 */
import type { TestProject } from 'vitest/node' with { 'resolution-mode': 'import' };
import { startEtcd, type StartedEtcd } from './etcd';
import { etcdVersionOnce } from './etcd-version-setup';

declare module 'vitest' {
  export interface ProvidedContext {
    /** Comma-separated client URLs of the shared test etcd. */
    etcdEndpoints: string;
  }
}

let started: StartedEtcd | undefined;

export async function setup(project: TestProject): Promise<void> {
  await etcdVersionOnce();
  started = await startEtcd();
  project.provide('etcdEndpoints', started.endpoints);
}

export async function teardown(): Promise<void> {
  const s = started;
  started = undefined;
  await s?.stop();
}
