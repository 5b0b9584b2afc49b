/**
 * Figure 6's finding, in plain JavaScript:
 *   npx tsx bench/diagnostics/map-churn.ts
 * In V8, deleting a key from a Map and setting it again leaves the deleted entry in
 * its bucket's chain until the table is rehashed, which only happens when the table
 * is full. Churning ONE key (a flapping endpoint, or a value update done as
 * delete + set) therefore walks a chain that grows with the Map's free capacity,
 * i.e. with its size; churning different keys, or set() in place, stays O(1).
 */
const N = 100_000;
for (const size of [10, 100, 1000, 10_000, 100_000]) {
  const row: string[] = [];
  for (const pattern of ['same key: delete + set', 'different keys: delete + set', 'same key: set in place']) {
    const map = new Map<string, number>();
    for (let i = 0; i < size; i++) map.set(`key-${i}`, i);
    const t0 = performance.now();
    for (let i = 0; i < N; i++) {
      const key = pattern.startsWith('different') ? `key-${i % size}` : 'key-0';
      if (!pattern.endsWith('in place')) map.delete(key);
      map.set(key, i);
    }
    row.push(`${pattern}: ${(((performance.now() - t0) * 1e6) / N).toFixed(0).padStart(6)} ns`);
  }
  console.log(`${String(size).padStart(7)} entries | ${row.join(' | ')}`);
}
