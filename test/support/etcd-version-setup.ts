/**
 * vitest globalSetup of the projects that run etcd (integration, faults): prints which etcd
 * binary and version this run uses, once per run, and fails the run when
 * REGISTRY_TEST_ETCD_VERSION is set and the binary on PATH is another version (see
 * checkEtcdVersion in ./etcd).
 */
import { checkEtcdVersion, type EtcdVersionInfo } from './etcd';

// Global setups of all projects run in the one vitest main process: share the result there.
const shared = globalThis as { etcdVersionCheck?: Promise<EtcdVersionInfo | undefined> };

/** The check and the print, once per vitest run whichever project asks first. */
export function etcdVersionOnce(): Promise<EtcdVersionInfo | undefined> {
  if (shared.etcdVersionCheck === undefined) {
    shared.etcdVersionCheck = checkEtcdVersion().then((info) => {
      const wanted = process.env.REGISTRY_TEST_ETCD_VERSION?.trim();
      const pin = wanted ? ` (REGISTRY_TEST_ETCD_VERSION=${wanted})` : '';
      if (info === undefined) {
        console.log(`etcd for this run: no etcd binary on PATH${pin}`);
      } else {
        console.log(`etcd for this run: ${info.etcd}: ${info.etcdVersion}${pin}`);
        if (info.etcdctl !== undefined) console.log(`etcdctl for this run: ${info.etcdctl}: ${info.etcdctlVersion}`);
      }
      return info;
    });
  }
  return shared.etcdVersionCheck;
}

export async function setup(): Promise<void> {
  await etcdVersionOnce();
}
