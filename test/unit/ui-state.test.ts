/** The web view's state: first load is not a change, later changes are batched into one delta and a bounded feed. */
import { describe, expect, it } from 'vitest';
import { FEED_LENGTH, ViewState, type EndpointRow } from '../../lib/ui/state';
import { spacedJson } from '../../lib/ui/source';

const row = (service: string, address: string, extra: Partial<EndpointRow> = {}): Omit<EndpointRow, 'since' | 'atStart'> => ({
  key: `p/services/${service}/${address}`,
  service,
  address,
  metadata: '{}',
  lease: '',
  createRevision: 1,
  modRevision: 1,
  ...extra,
});

describe('ViewState', () => {
  it('the first load is no change; later puts and deletes are one delta, with feed entries and service counts', () => {
    const state = new ViewState('p', 'http://127.0.0.1:2379');
    state.replaceAll([row('web', 'a:1'), row('web', 'b:1', { lease: '00000000000000ab' })], ['p/services/junk'], 10);
    const first = state.takeDelta();
    expect(first.delta?.feed).toEqual([]);
    expect(first.status).toMatchObject({ revision: 10, skipped: 1 });
    expect(state.snapshot().endpoints.every((e) => e.atStart)).toBe(true);
    expect([...state.leases()]).toEqual(['00000000000000ab']);

    state.put(row('api', 'c:1', { modRevision: 11 }));
    state.put(row('web', 'a:1', { metadata: '{"zone":"b"}', modRevision: 12 }));
    state.remove('p/services/web/b:1');
    state.remove('p/services/nothing/x:1');
    const { delta } = state.takeDelta();
    expect(delta?.feed.map((f) => `${f.change} ${f.service} ${f.address}`)).toEqual(['registered api c:1', 'updated web a:1', 'deregistered web b:1']);
    expect(delta?.removals).toEqual(['p/services/web/b:1']);
    expect(delta?.upserts.map((u) => u.key).sort()).toEqual(['p/services/api/c:1', 'p/services/web/a:1']);
    expect(state.snapshot().services).toEqual([
      { name: 'web', count: 1, lastChange: expect.any(Number) },
      { name: 'api', count: 1, lastChange: expect.any(Number) },
    ]);
    expect([...state.leases()]).toEqual([]);
    expect(state.takeDelta().delta).toBeUndefined();
  });

  it('a resync reports what changed while the watch was down, marked as found on re-read', () => {
    const state = new ViewState('p', 'e');
    state.replaceAll([row('web', 'a:1'), row('web', 'b:1')], [], 5);
    state.takeDelta();
    state.replaceAll([row('web', 'b:1'), row('web', 'c:1')], [], 9);
    const { delta } = state.takeDelta();
    expect(delta?.feed.map((f) => `${f.change} ${f.address} ${f.resync}`)).toEqual(['deregistered a:1 true', 'registered c:1 true']);
  });

  it('keeps the feed bounded, and the same row put again is no change', () => {
    const state = new ViewState('p', 'e');
    state.replaceAll([], [], 1);
    for (let i = 0; i < FEED_LENGTH + 50; i++) state.put(row('web', `h${i}:1`));
    state.put(row('web', 'h0:1'));
    expect(state.snapshot().feed).toHaveLength(FEED_LENGTH);
    expect(state.takeDelta().delta?.feed).toHaveLength(FEED_LENGTH);
  });

  it('metadata is shown as JSON on one line that wraps at spaces', () => {
    const metadata = { zone: 'eu-1', note: 'a\nb', n: [1, 2] };
    expect(spacedJson(metadata)).toBe('{ "zone": "eu-1", "note": "a\\nb", "n": [ 1, 2 ] }');
    expect(JSON.parse(spacedJson(metadata))).toEqual(metadata);
  });
});
