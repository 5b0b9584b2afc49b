/**
 * `npm run demo`: two instances of examples/service.ts and one examples/client.ts,
 * each a real process. The client spreads its requests over both; one service is
 * stopped with SIGTERM (as `docker stop` would) and the client's list shrinks at
 * once, long before the lease TTL. Uses the etcd at REGISTRY_ETCD_ENDPOINTS when it
 * answers, otherwise starts a throwaway one (Docker, or the `etcd` binary).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { resolveConfig } from '../lib';
import { findFreePorts, isHealthy, startEtcd } from '../test/support/etcd';

const root = path.resolve(__dirname, '..');
const children: ChildProcess[] = [];
let stopEtcd: () => Promise<void> = async () => undefined;

function say(line: string): void {
  console.log(`demo     | ${line}`);
}

/** Starts an example as a child process; its lines are printed with a label and watched for by `waitFor`. */
function start(label: string, file: string, env: Record<string, string>): { proc: ChildProcess; waitFor: (re: RegExp) => Promise<string> } {
  const proc = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'examples', file)], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(proc);
  const waiters: { re: RegExp; resolve: (line: string) => void }[] = [];
  let buffered = '';
  proc.stdout!.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      console.log(`${label.padEnd(8)} | ${line.replace(/^\w+: /, '')}`);
      for (const w of waiters.splice(0)) {
        if (w.re.test(line)) w.resolve(line);
        else waiters.push(w);
      }
    }
  });
  return { proc, waitFor: (re) => new Promise((resolve) => waiters.push({ re, resolve })) };
}

async function etcdEndpoints(): Promise<string> {
  const configured = resolveConfig({ shutdownSignals: [] }).etcdEndpoints;
  if (await isHealthy(configured[0]!)) {
    say(`using etcd at ${configured.join(',')}`);
    return configured.join(',');
  }
  say(`no etcd answers at ${configured[0]}: starting a throwaway one`);
  const etcd = await startEtcd();
  stopEtcd = etcd.stop;
  say(`etcd (${etcd.kind}) at ${etcd.endpoints}`);
  return etcd.endpoints;
}

async function main(): Promise<void> {
  const endpoints = await etcdEndpoints();
  const prefix = `demo-${randomBytes(3).toString('hex')}`;
  const [portA, portB] = await findFreePorts(2);
  const common = { REGISTRY_ETCD_ENDPOINTS: endpoints, REGISTRY_KEY_PREFIX: prefix, REGISTRY_SERVICE_NAME: 'hello', REGISTRY_LEASE_SECONDS: '10' };

  say(`starting two "hello" services on ports ${portA} and ${portB} (keys under ${prefix}/services/hello/)`);
  const a = start('hello-a', 'service.ts', { ...common, PORT: String(portA), REGISTRY_SERVICE_ADDRESS: `127.0.0.1:${portA}` });
  const b = start('hello-b', 'service.ts', { ...common, PORT: String(portB), REGISTRY_SERVICE_ADDRESS: `127.0.0.1:${portB}` });
  await Promise.all([a.waitFor(/registered/), b.waitFor(/registered/)]);

  say('starting a client that discovers "hello" and sends a request every 300 ms');
  const client = start('client', 'client.ts', { ...common, REGISTRY_TARGET: 'hello', REQUEST_INTERVAL_MS: '300' });
  let answers = 0;
  const seen = new Set<string>();
  client.proc.stdout!.on('data', (chunk: Buffer) => {
    for (const m of chunk.toString().matchAll(/on port (\d+)/g)) {
      answers++;
      seen.add(m[1]!);
    }
  });
  while (answers < 6) await new Promise((r) => setTimeout(r, 100));
  say(`the client spread its requests over ${seen.size} service(s): ports ${Array.from(seen).join(' and ')}`);

  say(`stopping hello-a with SIGTERM, as docker stop would (lease TTL is ${common.REGISTRY_LEASE_SECONDS} s)`);
  const shrunk = client.waitFor(/now has 1 endpoint/);
  const sent = process.hrtime.bigint();
  a.proc.kill('SIGTERM');
  await shrunk;
  const ms = Number(process.hrtime.bigint() - sent) / 1e6;
  const exit = await new Promise<string>((resolve) => a.proc.once('exit', (code, signal) => resolve(signal ?? `code ${code}`)));
  say(`the client's list shrank ${ms.toFixed(1)} ms after the signal; hello-a ended with ${exit}`);

  const before = answers;
  while (answers < before + 4) await new Promise((r) => setTimeout(r, 100));
  say('every request now goes to hello-b. Cleaning up.');
}

async function cleanup(): Promise<void> {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
  await stopEtcd();
}

main()
  .then(cleanup)
  .then(() => say('done'))
  .catch(async (e: unknown) => {
    console.error(e);
    await cleanup();
    process.exitCode = 1;
  });
