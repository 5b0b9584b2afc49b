/**
 * etcd's gRPC proxy (`etcd grpc-proxy start`, the same binary as etcd) in front of
 * a test etcd, as large fleets reach etcd. SIGKILLed when this process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { findFreePort, findOnPath, isHealthy } from './etcd';

const live = new Set<ChildProcess>();
let hooked = false;

export class GrpcProxy {
  private child: ChildProcess | undefined;
  private port = 0;
  private stderr = '';

  /** `target`: the client URL of etcd (or several, comma-separated). */
  constructor(private readonly target: string) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(timeoutMs = 15_000): Promise<void> {
    const etcd = process.env.ETCD_BIN ?? findOnPath('etcd');
    if (etcd === undefined) throw new Error('the etcd binary (which runs grpc-proxy) is not on PATH');
    this.port = await findFreePort();
    const endpoints = this.target
      .split(',')
      .map((u) => new URL(u).host)
      .join(',');
    // 3.5's proxy exits after a few seconds without --advertise-client-url (it dials 127.0.0.1:23790).
    const child = spawn(etcd, ['grpc-proxy', 'start', `--endpoints=${endpoints}`, `--listen-addr=127.0.0.1:${this.port}`, `--advertise-client-url=127.0.0.1:${this.port}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr?.on('data', (b: Buffer) => (this.stderr = (this.stderr + b.toString()).slice(-4000)));
    this.child = child;
    live.add(child);
    child.once('exit', () => live.delete(child));
    if (!hooked) {
      hooked = true;
      process.on('exit', () => {
        for (const c of live) c.kill('SIGKILL');
      });
    }
    const deadline = Date.now() + timeoutMs;
    while (!(await isHealthy(this.url, 500))) {
      if (child.exitCode !== null) throw new Error(`grpc-proxy exited with ${child.exitCode}: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`grpc-proxy on ${this.url} not healthy within ${timeoutMs} ms: ${this.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }
}
