/**
 * The contract of lib/publish/ as the model-based tests check it (test/faults/model.test.ts
 * against a real etcd, test/unit/intents-model.test.ts against a simulated one): what one
 * key should hold once every call on it has settled.
 */

/** A register() or unregister() of one key, as its caller saw it end. */
export interface CallOutcome {
  readonly kind: 'register' | 'unregister';
  readonly state: 'pending' | 'resolved' | 'rejected';
  readonly code?: string;
}

/**
 * Applies the contract from the last call backwards: a pending or resolved register()
 * or an unregister() (resolved, pending, or given up with ERR_ETCD_UNREACHABLE: it
 * deletes in the background) decides; a rejected register() and an unregister()
 * refused (ERR_NOT_REGISTERED, or by etcd) have no effect. Returns the register() whose
 * value the key holds, or undefined: absent.
 */
export function standingRegister<C extends CallOutcome>(calls: readonly C[]): C | undefined {
  for (let i = calls.length - 1; i >= 0; i--) {
    const c = calls[i]!;
    if (c.kind === 'unregister') {
      if (c.state === 'rejected' && c.code !== 'ERR_ETCD_UNREACHABLE') continue;
      return undefined;
    }
    if (c.state !== 'rejected') return c;
  }
  return undefined;
}
