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

describe('Intents: a put of ours that etcd applies late is undone (MODEL_SEED=12, MODEL_SEED=20 in a cluster)', () => {
  it('a late put of a key unregistered since is deleted again', async () => {
    const intents = new Intents();
    const first = intents.intend(KEY, reg(1));
    writeAll(intents);
    await first.done;
    const removed = intents.intend(KEY, undefined);
    writeAll(intents);
    await removed.done;
    expect(intents.dirty).toBe(false);
    // A put that gave up waiting (a paused member) is applied when the member resumes.
    expect(intents.latePut(KEY, reg(1).value, 20)).toBe(true);
    const { puts, deletes } = intents.owed(128);
    expect(puts).toEqual([]);
    expect(deletes.map((w) => w.key)).toEqual([KEY]);
    writeAll(intents);
    expect(intents.dirty).toBe(false);
  });

  it('a late put of an older value is overwritten with the registration the key should have', async () => {
    const intents = new Intents();
    const first = intents.intend(KEY, reg(1));
    writeAll(intents);
    await first.done;
    const update = intents.intend(KEY, reg(2));
    const { puts } = intents.owed(128);
    intents.sending(puts);
    intents.confirm(puts[0]!, 30);
    await update.done;
    // Our own put of the wanted value, or one older than the last confirmed put: nothing to do.
    expect(intents.latePut(KEY, reg(2).value, 31)).toBe(false);
    expect(intents.latePut(KEY, reg(1).value, 29)).toBe(false);
    // The older value applied after the newer one: written again.
    expect(intents.latePut(KEY, reg(1).value, 32)).toBe(true);
    expect(intents.owed(128).puts.map((w) => w.want?.endpoint.metadata)).toEqual([{ n: 2 }]);
  });

  it('a superseded put landing before the newer one is confirmed costs no extra write', async () => {
    const intents = new Intents();
    const first = intents.intend(KEY, reg(1));
    writeAll(intents);
    await first.done;
    intents.intend(KEY, reg(2));
    const { puts } = intents.owed(128);
    intents.sending(puts);
    intents.intend(KEY, reg(3));
    const third = intents.owed(128).puts;
    intents.sending(third);
    // The put of 2 lands (event seen) before the put of 3, which etcd applies after it.
    expect(intents.latePut(KEY, reg(2).value, 40)).toBe(true);
    intents.confirm(puts[0]!, 40);
    intents.confirm(third[0]!, 41);
    expect(intents.dirty).toBe(false);
  });
});
