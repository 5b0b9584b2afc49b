/**
 * Time from the first failing health check to the endpoint gone from another
 * registry's list, at the default health settings (interval 5 s, timeout 2 s,
 * 3 failures). One HTTP service on loopback whose /healthz turns 503.
 *   npx tsx bench/diagnostics/health-removal.ts [runs=1]
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from '../../lib';
import { EtcdNode } from '../../test/support/etcd';

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 1);
  const etcd = new EtcdNode();
  await etcd.start();
  try {
    for (let run = 0; run < runs; run++) {
      let code = 200;
      let firstFailure = 0;
      const server = http.createServer((req, res) => {
        if (code !== 200 && firstFailure === 0) firstFailure = performance.now();
        res.writeHead(req.url === '/healthz' ? code : 404).end();
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const options = { etcdEndpoints: etcd.clientUrl, keyPrefix: `health-${run}`, shutdownSignals: [] as string[], env: {} };
      const a = new Registry(options);
      const b = new Registry(options);
      const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
      await a.register({ service: 'web', address, health: { url: '/healthz' } });
      await b.waitFor('web');
      const gone = new Promise<number>((resolve) =>
        b.on('change', (e) => {
          if (e.endpoints.length === 0) resolve(performance.now());
        }),
      );
      code = 503;
      const at = await gone;
      console.log(`run ${run + 1}: first failing check → gone from another registry's list: ${((at - firstFailure) / 1000).toFixed(3)} s`);
      await Promise.all([a.close(), b.close()]);
      server.close();
    }
  } finally {
    await etcd.stop();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
