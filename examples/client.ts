/**
 * Discovers a service, sends requests round-robin, and prints the endpoint list whenever it changes.
 *
 *   REGISTRY_TARGET=hello npx tsx examples/client.ts
 */
import { Registry } from '../lib';

const target = process.env.REGISTRY_TARGET ?? 'hello';
const intervalMs = Number(process.env.REQUEST_INTERVAL_MS ?? 500);

async function main(): Promise<void> {
  const registry = new Registry();
  registry.on('change', ({ service, endpoints }) => {
    if (service === target) console.log(`client: ${target} now has ${endpoints.length} endpoint(s): ${endpoints.map((e) => e.address).join(', ') || '(none)'}`);
  });
  const list = await registry.endpoints(target);
  console.log(`client: ${target} has ${list.length} endpoint(s): ${list.map((e) => e.address).join(', ') || '(none)'}`);

  const timer = setInterval(async () => {
    let endpoint;
    try {
      endpoint = registry.pick(target);
    } catch (e) {
      console.log(`client: ${(e as Error).message}`);
      return;
    }
    try {
      const res = await fetch(`http://${endpoint.address}/`, { signal: AbortSignal.timeout(1000) });
      console.log(`client: ${endpoint.address} answered: ${(await res.text()).trim()}`);
    } catch (e) {
      console.log(`client: ${endpoint.address} failed: ${(e as Error).message}`);
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
