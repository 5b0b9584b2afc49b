import createDebug from 'debug';

/** A debug logger under `etcd-service-registry:<area>`. */
export function logger(area: string): createDebug.Debugger {
  return createDebug(`etcd-service-registry:${area}`);
}
