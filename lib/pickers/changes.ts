/** Normalizes one `update(added, removed)` call into removals and upserts by key. */
import type { Endpoint } from '../types';

export interface NormalizedChange {
  /** Keys to remove: in `removed` and not re-added in the same change; deduplicated. */
  readonly removedKeys: readonly string[];
  /** Endpoints to insert, or to replace in place when their key is present; one per key, the last wins. */
  readonly upserts: readonly Endpoint[];
}

export function normalizeChange(added: readonly Endpoint[], removed: readonly Endpoint[]): NormalizedChange {
  const upsertByKey = new Map<string, Endpoint>();
  for (const e of added) upsertByKey.set(e.key, e);
  const removedKeys: string[] = [];
  const seen = new Set<string>();
  for (const e of removed) {
    if (upsertByKey.has(e.key) || seen.has(e.key)) continue;
    seen.add(e.key);
    removedKeys.push(e.key);
  }
  return { removedKeys, upserts: [...upsertByKey.values()] };
}
