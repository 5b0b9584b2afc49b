/**
 * An HTTP service that registers itself from the environment and deregisters on SIGTERM.
 *
 *   REGISTRY_SERVICE_NAME=hello REGISTRY_SERVICE_ADDRESS=127.0.0.1:8081 PORT=8081 npx tsx examples/service.ts
 */
import { createServer } from 'node:http';
import { Registry } from '../lib';

const port = Number(process.env.PORT ?? 8080);
const name = process.env.REGISTRY_SERVICE_NAME ?? 'hello';

const server = createServer((req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end(`hello from ${name} on port ${port} (${req.method} ${req.url})\n`);
});

server.listen(port, '127.0.0.1', async () => {
  const registry = new Registry();
  const endpoint = await registry.register();
  console.log(`${name}: listening on ${port}, registered as ${endpoint.key}`);
  // On SIGTERM the registry deregisters at once, then re-raises the signal:
  // the process ends as it would have without the library.
});
