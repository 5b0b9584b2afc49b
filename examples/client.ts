/**
 * Discovers a service, sends it a request every REQUEST_INTERVAL_MS with failover
 * (an endpoint that does not answer is marked down and another one tried), and
 * prints the endpoint list whenever it changes.
 *
 *   REGISTRY_TARGET=hello npx tsx examples/client.ts
 */
import { Registry } from '../lib';

const target = process.env.REGISTRY_TARGET ?? 'hello';
const intervalMs = Number(process.env.REQUEST_INTERVAL_MS ?? 500);

const show = (endpoints: readonly { address: string }[]): string =>
  `${endpoints.length} endpoint(s): ${endpoints.map((e) => e.address).join(', ') || '(none)'}`;

async function main(): Promise<void> {
  const registry = new Registry();
  registry.on('change', ({ service, endpoints }) => {
    if (service === target) console.log(`client: ${target} now has ${show(endpoints)}`);
  });
  console.log(`client: ${target} has ${show(await registry.endpoints(target))}`);

  const timer = setInterval(async () => {
    try {
      const res = await registry.fetch(target, '/', { attemptTimeout: 1000 });
      console.log(`client: ${res.status} ${(await res.text()).trim()}`);
    } catch (e) {
      console.log(`client: ${(e as Error).message}`);
    }
  }, intervalMs);

  const stop = async (): Promise<void> => {
    clearInterval(timer);
    await registry.close();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
