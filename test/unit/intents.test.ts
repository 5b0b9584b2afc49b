import { describe, expect, it } from 'vitest';
import { RegistryError } from '../../lib/errors';
import { Intents, type Registration } from '../../lib/publish/intents';

const KEY = 'p/services/web/10.0.0.1:80';
const reg = (n: number): Registration => ({
  endpoint: Object.freeze({ service: 'web', address: '10.0.0.1:80', metadata: { n }, key: KEY }),
  value: Buffer.from(JSON.stringify({ Op: 0, Addr: '10.0.0.1:80', Metadata: { n } })),
});
const timeout = (): RegistryError => new RegistryError('ERR_ETCD_UNREACHABLE', 'timed out');

/** Takes the owed writes, sends and confirms them all, as the keeper's writer does when etcd answers. */
function writeAll(intents: Intents): void {
  const { puts, deletes } = intents.owed(128);
  intents.sending(puts);
  for (const w of [...puts, ...deletes]) intents.confirm(w, 10);
}

describe('Intents: a failed register() falls back to what the calls before it asked for', () => {
  it('an unregister() still pending when a newer register() fails stands: the key goes', async () => {
    const intents = new Intents();
    const first = intents.intend(KEY, reg(1));
    writeAll(intents);
    await first.done;
    // etcd stops answering: unregister(), then register() again, which times out.
    const removed = intents.intend(KEY, undefined);
    const again = intents.intend(KEY, reg(2));
    again.done.catch(() => undefined);
    intents.withdraw(KEY, again.token, 'put', timeout());
    await expect(again.done).rejects.toThrow('timed out');
    // The unregister was not undone by the register() that failed after it.
    expect(intents.endpoint(KEY)).toBeUndefined();
    const { puts, deletes } = intents.owed(128);
    expect(puts).toEqual([]);
    expect(deletes.map((w) => w.key)).toEqual([KEY]);
    writeAll(intents);
    await removed.done;
    expect(intents.dirty).toBe(false);
  });

  it('a register() still pending when a newer unregister() is refused stands: the key keeps its value', async () => {
    const intents = new Intents();
    const first = intents.intend(KEY, reg(1));
    writeAll(intents);
    await first.done;
    const second = intents.intend(KEY, reg(2));
    // The put of the second registration is sent (in flight) when unregister() comes.
    const inFlight = intents.owed(128).puts;
    intents.sending(inFlight);
    const removed = intents.intend(KEY, undefined);
    removed.done.catch(() => undefined);
    intents.withdraw(KEY, removed.token, 'delete', new RegistryError('ERR_ETCD_REQUEST', 'refused'));
    await expect(removed.done).rejects.toThrow('refused');
    // The refused unregister() has no effect: the register() before it decides.
    expect(intents.endpoint(KEY)?.metadata).toEqual({ n: 2 });
    writeAll(intents);
    await second.done;
    expect(intents.dirty).toBe(false);
  });

  it('with nothing pending before it, a failed update falls back to the confirmed registration', async () => {
    const intents = new Intents();
    const first = intents.intend(KEY, reg(1));
    writeAll(intents);
    await first.done;
    const update = intents.intend(KEY, reg(2));
    update.done.catch(() => undefined);
    intents.withdraw(KEY, update.token, 'put', timeout());
    expect(intents.endpoint(KEY)?.metadata).toEqual({ n: 1 });
  });
});
