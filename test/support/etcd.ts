/**
 * etcd process toolkit for tests: real etcd members started from the `etcd` binary
 * (or a Docker container / external endpoints for the shared test instance).
 *
 * Every spawned etcd is
 *  - registered in a module-level set and SIGKILLed synchronously on process `exit`;
 *  - watched by a tiny `/bin/sh` watchdog that holds a pipe to this process and SIGKILLs
 *    the etcd when the pipe reaches EOF, i.e. when this process dies in any way (even SIGKILL).
 * So no orphan etcd outlives the test process.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { PeerProxy } from './peer-proxy';

// ---------------------------------------------------------------------------------------------
// Ports

/** One free TCP port on 127.0.0.1 (listen on port 0, read it, close). */
export async function findFreePort(): Promise<number> {
  const [port] = await findFreePorts(1);
  return port as number;
}

/**
 * Test files running at once (vitest's forks) each take ports from a range of their own
 * (VITEST_POOL_ID), below the kernel's ephemeral range, and never the same twice in a
 * process: a port etcd frees while it is killed and restarted on it is then never handed to
 * an etcd another file starts meanwhile, as port 0 could (seen in CI: "could not bind its ports").
 */
const POOL_ID = Number(process.env.VITEST_POOL_ID);
const handedOut = new Set<number>();

function candidatePort(): number {
  if (!Number.isInteger(POOL_ID)) return 0;
  const base = 20_000 + (POOL_ID % 10) * 1000;
  for (;;) {
    const port = base + Math.floor(Math.random() * 1000);
    if (!handedOut.has(port)) return port;
  }
}

/**
 * `count` distinct free ports on 127.0.0.1. All listeners are held open at the same time,
 * so the ports are distinct from each other. (Another process may still grab one before you
 * bind it: EtcdNode/EtcdCluster retry with new ports when etcd reports "address already in use".)
 */
export async function findFreePorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = net.createServer();
      servers.push(server);
      for (let attempt = 1; ; attempt++) {
        const port = attempt > 50 ? 0 : candidatePort();
        try {
          await new Promise<void>((resolve, reject) => {
            server.once('error', reject);
            server.listen({ host: '127.0.0.1', port, exclusive: true }, () => {
              server.off('error', reject);
              resolve();
            });
          });
          break;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || port === 0) throw e;
        }
      }
      const address = server.address();
      if (address === null || typeof address === 'string') throw new Error('unexpected server address');
      ports.push(address.port);
      handedOut.add(address.port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

// ---------------------------------------------------------------------------------------------
// Binaries

/** Absolute path of an executable found on PATH, or undefined. */
export function findOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

const INSTALL_HINT =
  'Install etcd (Debian/Ubuntu: `apt-get install -y etcd-server etcd-client`), ' +
  'or set REGISTRY_TEST_ETCD_ENDPOINTS=http://host:2379 to use a running etcd.';

function etcdBinary(): string {
  const found = process.env.ETCD_BIN ?? findOnPath('etcd');
  if (found === undefined) throw new Error(`The \`etcd\` binary was not found on PATH. ${INSTALL_HINT}`);
  return found;
}

function etcdctlBinary(): string {
  const found = process.env.ETCDCTL_BIN ?? findOnPath('etcdctl');
  if (found === undefined) throw new Error(`The \`etcdctl\` binary was not found on PATH. ${INSTALL_HINT}`);
  return found;
}

/** `etcd Version: 3.4.23` → `3.4.23`; undefined when the text has no version line. */
function versionIn(text: string): string | undefined {
  return /Version:\s*(\d+\.\d+\.\d+\S*)/i.exec(text)?.[1];
}

/** The wanted version matches `found` exactly or as a prefix at a dot (`3.4` matches `3.4.23`). */
function versionMatches(found: string, wanted: string): boolean {
  return found === wanted || found.startsWith(`${wanted}.`);
}

function firstLineOf(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')} failed: ${stderr.trim() || err.message}`));
      else resolve(stdout.split('\n')[0]?.trim() ?? '');
    });
  });
}

/** What checkEtcdVersion() found: the binaries the harness runs and their `--version` first lines. */
export interface EtcdVersionInfo {
  etcd: string;
  etcdVersion: string;
  etcdctl: string | undefined;
  etcdctlVersion: string | undefined;
}

/**
 * The etcd (and etcdctl) binaries that EtcdNode and etcdctl() run (ETCD_BIN / ETCDCTL_BIN, else
 * PATH) and their versions. With REGISTRY_TEST_ETCD_VERSION set (`3.5.30`, or `3.5` for any 3.5.x),
 * throws when either binary is another version or etcd is missing, so a wrong PATH cannot quietly
 * run the suite against the wrong etcd. Without it, a missing etcd is not an error here (the tests
 * that need it say so).
 */
export async function checkEtcdVersion(): Promise<EtcdVersionInfo | undefined> {
  const wanted = process.env.REGISTRY_TEST_ETCD_VERSION?.trim() || undefined;
  const etcd = process.env.ETCD_BIN ?? findOnPath('etcd');
  if (etcd === undefined) {
    if (wanted !== undefined) {
      throw new Error(`REGISTRY_TEST_ETCD_VERSION=${JSON.stringify(wanted)} but no \`etcd\` binary is on PATH. ${INSTALL_HINT}`);
    }
    return undefined;
  }
  const etcdVersion = await firstLineOf(etcd, ['--version']);
  const etcdctl = process.env.ETCDCTL_BIN ?? findOnPath('etcdctl');
  const etcdctlVersion = etcdctl === undefined ? undefined : await firstLineOf(etcdctl, ['version']);
  if (wanted !== undefined) {
    for (const [file, line] of [[etcd, etcdVersion], [etcdctl, etcdctlVersion]] as const) {
      if (file === undefined || line === undefined) continue;
      const found = versionIn(line);
      if (found === undefined || !versionMatches(found, wanted)) {
        throw new Error(
          `REGISTRY_TEST_ETCD_VERSION=${JSON.stringify(wanted)} but ${file} is ${JSON.stringify(line)}: ` +
            'put the wanted etcd first on PATH (or set ETCD_BIN / ETCDCTL_BIN), or unset REGISTRY_TEST_ETCD_VERSION',
        );
      }
    }
  }
  return { etcd, etcdVersion, etcdctl, etcdctlVersion };
}

// ---------------------------------------------------------------------------------------------
// Orphan protection

interface Tracked {
  child: ChildProcess;
  watchdog: ChildProcess | undefined;
}

const tracked = new Set<Tracked>();
/** Temp dirs of nodes not stopped yet: removed synchronously on exit. */
const liveDirs = new Set<string>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const t of tracked) {
      // Watchdog first, so that it cannot later SIGKILL a recycled pid.
      if (t.watchdog?.pid !== undefined) safeKill(t.watchdog.pid, 'SIGKILL');
      if (t.child.pid !== undefined) safeKill(t.child.pid, 'SIGKILL');
    }
    tracked.clear();
    for (const dir of liveDirs) {
      try {
        fs.rmSync(dir, { recursive: true, force: true });
      } catch {
        // best effort
      }
    }
    liveDirs.clear();
  });
}

function safeKill(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/**
 * `sh -c 'read _; kill -9 PID; rm -rf DIR'` with its stdin a pipe from this process: `read`
 * returns on EOF, which happens when this process dies (the kernel closes our end of the pipe).
 */
function spawnWatchdog(pid: number, dir: string): ChildProcess | undefined {
  if (!fs.existsSync('/bin/sh')) return undefined;
  try {
    const script = 'read _line; kill -9 "$1" 2>/dev/null; rm -rf -- "$2"';
    const wd = spawn('/bin/sh', ['-c', script, 'etcd-watchdog', String(pid), dir], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    wd.on('error', () => undefined);
    wd.stdin?.on('error', () => undefined);
    (wd.stdin as unknown as net.Socket | null)?.unref?.();
    wd.unref();
    return wd;
  } catch {
    return undefined;
  }
}

function untrack(t: Tracked): void {
  if (t.watchdog?.pid !== undefined && t.watchdog.exitCode === null && t.watchdog.signalCode === null) {
    safeKill(t.watchdog.pid, 'SIGKILL');
  }
  tracked.delete(t);
}

/** Number of etcd processes spawned by this module that are still alive (for leak checks). */
export function liveEtcdProcessCount(): number {
  return tracked.size;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

class OutputTail {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly limit = 16 * 1024) {}
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size > this.limit && this.chunks.length > 1) {
      this.size -= (this.chunks.shift() as Buffer).length;
    }
  }
  text(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.limit)).toString('utf8');
  }
  clear(): void {
    this.chunks = [];
    this.size = 0;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function tempBase(): string {
  const shm = '/dev/shm';
  try {
    fs.accessSync(shm, fs.constants.W_OK);
    if (fs.statSync(shm).isDirectory()) return shm;
  } catch {
    // fall through
  }
  return os.tmpdir();
}

interface HttpResult {
  status: number;
  body: string;
}

/** PEM contents for an https:// request: the CA to trust, and a client certificate if etcd asks for one. */
export interface HttpsTrust {
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

function httpRequest(url: string, options: { method?: string; body?: string; timeoutMs: number; tls?: HttpsTrust }): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const secure = url.startsWith('https:');
    const req = (secure ? https : http).request(
      url,
      {
        method: options.method ?? 'GET',
        agent: false,
        timeout: options.timeoutMs,
        headers: options.body !== undefined ? { 'content-type': 'application/json' } : {},
        ...(secure && options.tls),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`timeout after ${options.timeoutMs} ms: ${url}`)));
    req.on('error', reject);
    req.end(options.body);
  });
}

/** `GET <clientUrl>/health` answered `{"health":"true"}` within `timeoutMs`. */
export async function isHealthy(clientUrl: string, timeoutMs = 1000, tls?: HttpsTrust): Promise<boolean> {
  try {
    const res = await httpRequest(`${clientUrl}/health`, { timeoutMs, tls });
    if (res.status !== 200) return false;
    const parsed = JSON.parse(res.body) as { health?: unknown };
    return parsed.health === 'true' || parsed.health === true;
  } catch {
    return false;
  }
}

/** The fields of the maintenance status that tests care about (uint64 ids as decimal strings). */
export interface EtcdStatus {
  clusterId: string;
  memberId: string;
  leader: string;
  revision: number;
  raftTerm: number;
  raftIndex: number;
  version: string;
}

/** Maintenance status of one member through the gRPC gateway (`POST /v3/maintenance/status`). */
export async function memberStatus(clientUrl: string, timeoutMs = 1000, tls?: HttpsTrust): Promise<EtcdStatus> {
  const res = await httpRequest(`${clientUrl}/v3/maintenance/status`, { method: 'POST', body: '{}', timeoutMs, tls });
  if (res.status !== 200) throw new Error(`status ${res.status} from ${clientUrl}: ${res.body}`);
  const raw = JSON.parse(res.body) as {
    header?: { cluster_id?: string; member_id?: string; revision?: string; raft_term?: string };
    leader?: string;
    raftIndex?: string;
    raftTerm?: string;
    version?: string;
  };
  return {
    clusterId: raw.header?.cluster_id ?? '',
    memberId: raw.header?.member_id ?? '',
    leader: raw.leader ?? '0',
    revision: Number(raw.header?.revision ?? 0),
    raftTerm: Number(raw.raftTerm ?? raw.header?.raft_term ?? 0),
    raftIndex: Number(raw.raftIndex ?? 0),
    version: raw.version ?? '',
  };
}

// ---------------------------------------------------------------------------------------------
// EtcdNode

export interface EtcdNodeOptions {
  /** Member name (default `etcd-<random>`). */
  name?: string;
  /** Fixed ports; both are picked with findFreePorts when omitted. */
  clientPort?: number;
  peerPort?: number;
  /** `--initial-cluster` (default: just this member). */
  initialCluster?: string;
  /** `--initial-cluster-token` (default: a random token). */
  initialClusterToken?: string;
  /** `--initial-cluster-state` (default `new`). Ignored by etcd once the data dir exists. */
  initialClusterState?: 'new' | 'existing';
  /** Raft timings (defaults 20 / 200 ms: fast start and lease TTLs of 1 s honoured). */
  heartbeatIntervalMs?: number;
  electionTimeoutMs?: number;
  /** More command line flags appended as-is. */
  extraArgs?: string[];
  /** Limit for start() (default 15 000 ms). */
  startTimeoutMs?: number;
  /** Serve clients over TLS (https:// client URL); peers stay on http://. */
  tls?: EtcdNodeTls;
  /** The peer URL told to the other members (default: the one it listens on), e.g. a PeerProxy's. */
  advertisePeerUrl?: string;
}

/** PEM file paths for an etcd member that serves its clients over TLS. */
export interface EtcdNodeTls {
  /** `--cert-file` / `--key-file`: the server certificate (SAN IP:127.0.0.1) and its key. */
  certFile: string;
  keyFile: string;
  /** The CA that signed the server certificate: what the health check trusts. */
  caFile: string;
  /**
   * `--client-cert-auth --trusted-ca-file <caFile>`: clients must present a certificate signed
   * by `caFile`. (etcd 3.4 turns client certificate authentication on whenever
   * --trusted-ca-file is given, so without this option that flag is left out.)
   */
  clientCertAuth?: boolean;
  /** The client certificate the health check presents (required with clientCertAuth). */
  clientCertFile?: string;
  clientKeyFile?: string;
}

export interface RestartOptions {
  /** Delete the data dir first: etcd comes back empty (same cluster id and member id). */
  wipe?: boolean;
}

let nodeCounter = 0;

/** One etcd member process on loopback. */
export class EtcdNode {
  readonly name: string;
  private _clientPort: number | undefined;
  private _peerPort: number | undefined;
  private readonly portsFixed: boolean;
  private readonly options: EtcdNodeOptions;
  private readonly token: string;
  private baseDir: string | undefined;
  private current: Tracked | undefined;
  private exitPromise: Promise<void> = Promise.resolve();
  private _paused = false;
  private readonly output = new OutputTail();
  /** Output of the current/last launch only (for bindFailed). */
  private readonly lastRun = new OutputTail(8 * 1024);
  /** Set by EtcdCluster so that members share --initial-cluster; otherwise computed. */
  initialCluster: string | undefined;
  /** `--initial-cluster-state` for the next start (EtcdCluster sets 'existing' to re-add a wiped member). */
  initialClusterState: 'new' | 'existing';

  constructor(options: EtcdNodeOptions = {}) {
    this.options = options;
    this.name = options.name ?? `etcd-${process.pid}-${++nodeCounter}-${randomBytes(3).toString('hex')}`;
    this._clientPort = options.clientPort;
    this._peerPort = options.peerPort;
    this.portsFixed = options.clientPort !== undefined && options.peerPort !== undefined;
    this.token = options.initialClusterToken ?? `etcd-test-${randomBytes(6).toString('hex')}`;
    this.initialCluster = options.initialCluster;
    this.initialClusterState = options.initialClusterState ?? 'new';
  }

  get clientPort(): number {
    if (this._clientPort === undefined) throw new Error(`${this.name}: ports are assigned by start()`);
    return this._clientPort;
  }

  get peerPort(): number {
    if (this._peerPort === undefined) throw new Error(`${this.name}: ports are assigned by start()`);
    return this._peerPort;
  }

  /** `http://127.0.0.1:<clientPort>` (`https://` with the tls option) */
  get clientUrl(): string {
    return `${this.options.tls ? 'https' : 'http'}://127.0.0.1:${this.clientPort}`;
  }

  /** What an https request to this member needs (undefined without the tls option). */
  get httpsTrust(): HttpsTrust | undefined {
    const tls = this.options.tls;
    if (!tls) return undefined;
    return {
      ca: fs.readFileSync(tls.caFile),
      ...(tls.clientCertFile !== undefined && { cert: fs.readFileSync(tls.clientCertFile) }),
      ...(tls.clientKeyFile !== undefined && { key: fs.readFileSync(tls.clientKeyFile) }),
    };
  }

  /** The peer URL the other members dial: `advertisePeerUrl`, else peerUrl. */
  get advertisedPeerUrl(): string {
    return this.options.advertisePeerUrl ?? this.peerUrl;
  }

  /** `http://127.0.0.1:<peerPort>` */
  get peerUrl(): string {
    return `http://127.0.0.1:${this.peerPort}`;
  }

  /** The member's data dir (`<tmp>/<name>.etcd`); exists after the first start. */
  get dataDir(): string {
    if (this.baseDir === undefined) throw new Error(`${this.name}: no data dir before start()`);
    return path.join(this.baseDir, `${this.name}.etcd`);
  }

  get pid(): number | undefined {
    return this.isRunning ? this.current?.child.pid : undefined;
  }

  /** The process exists (it may be paused). */
  get isRunning(): boolean {
    const child = this.current?.child;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  get isPaused(): boolean {
    return this.isRunning && this._paused;
  }

  /** Last ~16 KiB of the process's stdout+stderr (all starts). */
  get logs(): string {
    return this.output.text();
  }

  /** Assign ports now (normally done by start()). Idempotent. */
  async assignPorts(): Promise<void> {
    if (this._clientPort !== undefined && this._peerPort !== undefined) return;
    const [c, p] = await findFreePorts(2);
    this._clientPort = c;
    this._peerPort = p;
  }

  /** Spawn and wait until `/health` answers true (15 s limit by default). */
  start(): Promise<void> {
    // Ports are only re-picked on the very first start, never once clients/peers know them.
    return this.startInternal(!this.portsFixed && this.baseDir === undefined);
  }

  private async startInternal(mayPickNewPorts: boolean): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      await this.launch();
      try {
        await this.waitHealthy();
        return;
      } catch (err) {
        const retryable = mayPickNewPorts && attempt < 4 && this.bindFailed();
        if (!retryable) {
          await this.kill();
          throw err;
        }
        // Someone took one of our ports between findFreePorts and etcd's bind: new ports, clean dir.
        await this.kill();
        await this.wipeDataDir();
        this._clientPort = undefined;
        this._peerPort = undefined;
        this.output.clear();
      }
    }
  }

  /** Low-level: spawn the process without waiting for health (EtcdCluster starts members together). */
  async launch(): Promise<void> {
    if (this.isRunning) throw new Error(`${this.name} is already running (pid ${this.pid})`);
    await this.assignPorts();
    if (this.baseDir === undefined) {
      this.baseDir = await fsp.mkdtemp(path.join(tempBase(), 'etcd-test-'));
      liveDirs.add(this.baseDir);
    }
    const args = [
      '--name', this.name,
      '--data-dir', this.dataDir,
      '--listen-client-urls', this.clientUrl,
      '--advertise-client-urls', this.clientUrl,
      '--listen-peer-urls', this.peerUrl,
      '--initial-advertise-peer-urls', this.advertisedPeerUrl,
      '--initial-cluster', this.initialCluster ?? `${this.name}=${this.advertisedPeerUrl}`,
      '--initial-cluster-token', this.token,
      '--initial-cluster-state', this.initialClusterState,
      '--heartbeat-interval', String(this.options.heartbeatIntervalMs ?? 20),
      '--election-timeout', String(this.options.electionTimeoutMs ?? 200),
      '--logger', 'zap',
      '--log-level', 'error',
      ...tlsArgs(this.options.tls),
      ...(this.options.extraArgs ?? []),
    ];
    installExitHook();
    const child = spawn(etcdBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const t: Tracked = { child, watchdog: undefined };
    tracked.add(t);
    this.current = t;
    this._paused = false;
    this.lastRun.clear();
    const capture = (c: Buffer): void => {
      this.output.push(c);
      this.lastRun.push(c);
    };
    child.stdout?.on('data', capture);
    child.stderr?.on('data', capture);
    this.exitPromise = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        this.output.push(Buffer.from(`\n[${this.name} exited: code=${String(code)} signal=${String(signal)}]\n`));
        untrack(t);
        resolve();
      });
      child.once('error', (err) => {
        this.output.push(Buffer.from(`\n[${this.name} spawn error: ${err.message}]\n`));
        untrack(t);
        resolve();
      });
    });
    // A forgotten node must not keep the test process alive; the exit hook kills it.
    child.unref();
    (child.stdout as unknown as net.Socket | null)?.unref?.();
    (child.stderr as unknown as net.Socket | null)?.unref?.();
    if (child.pid !== undefined) t.watchdog = spawnWatchdog(child.pid, this.baseDir);
  }

  /** Low-level: poll `/health` until true, the process exits, or `timeoutMs` passes. */
  async waitHealthy(timeoutMs = this.options.startTimeoutMs ?? 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let delay = 10;
    for (;;) {
      if (!this.isRunning) {
        throw new Error(`etcd ${this.name} exited before it became healthy (client ${this.clientUrl}).\n${this.logs}`);
      }
      if (this.bindFailed()) {
        throw new Error(`etcd ${this.name} could not bind its ports (${this.clientUrl}, ${this.peerUrl}).\n${this.logs}`);
      }
      if (await isHealthy(this.clientUrl, Math.max(50, Math.min(1000, deadline - Date.now())), this.httpsTrust)) return;
      if (Date.now() >= deadline) {
        throw new Error(
          `etcd ${this.name} not healthy at ${this.clientUrl}/health after ${timeoutMs} ms.\n--- etcd output ---\n${this.logs}`,
        );
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 100);
    }
  }

  /** True when the last launch failed to bind a port (taken by someone else). */
  bindFailed(): boolean {
    return /address already in use/i.test(this.lastRun.text());
  }

  /** SIGKILL and wait for the exit. No-op when not running. Works on a paused process. */
  async kill(): Promise<void> {
    const t = this.current;
    if (t === undefined) return;
    if (this.isRunning && t.child.pid !== undefined) {
      // The child is unref'd: ref it so that the process stays alive until we see the exit.
      t.child.ref();
      safeKill(t.child.pid, 'SIGKILL');
    }
    await this.exitPromise;
    this._paused = false;
  }

  /** Start again with the same name and ports; `wipe: true` deletes the data dir first. */
  async restart(options: RestartOptions = {}): Promise<void> {
    await this.kill();
    if (options.wipe === true) await this.wipeDataDir();
    await this.startInternal(false);
  }

  /** A backup: a copy of the data dir taken while the member is down (SIGKILL, copy, start again), for restoreBackup(). */
  async takeBackup(): Promise<string> {
    await this.kill();
    const backup = `${this.dataDir}.backup`;
    await fsp.cp(this.dataDir, backup, { recursive: true });
    await this.startInternal(false);
    return backup;
  }

  /** Restarts the member on the data dir of takeBackup() (the backup is used up). */
  async restoreBackup(backup: string): Promise<void> {
    await this.kill();
    await this.wipeDataDir();
    await fsp.rename(backup, this.dataDir);
    await this.startInternal(false);
  }

  /** SIGSTOP: the process stays, sockets stay open, nothing answers. */
  pause(): void {
    const pid = this.pid;
    if (pid === undefined) throw new Error(`${this.name} is not running`);
    process.kill(pid, 'SIGSTOP');
    this._paused = true;
    // The signal is delivered asynchronously: wait (up to 1 s) until the kernel shows the process stopped.
    const until = Date.now() + 1000;
    while (Date.now() < until && processState(pid) !== 'T') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
  }

  /** SIGCONT. */
  resume(): void {
    const pid = this.pid;
    if (pid === undefined) throw new Error(`${this.name} is not running`);
    process.kill(pid, 'SIGCONT');
    this._paused = false;
  }

  /** Maintenance status of this member. */
  status(timeoutMs = 1000): Promise<EtcdStatus> {
    return memberStatus(this.clientUrl, timeoutMs, this.httpsTrust);
  }

  /** Kill and remove the data dir. Safe to call more than once. */
  async stop(): Promise<void> {
    await this.kill();
    const dir = this.baseDir;
    if (dir !== undefined) {
      this.baseDir = undefined;
      await fsp.rm(dir, { recursive: true, force: true });
      liveDirs.delete(dir);
    }
  }

  private async wipeDataDir(): Promise<void> {
    if (this.baseDir !== undefined) await fsp.rm(this.dataDir, { recursive: true, force: true });
  }
}

function tlsArgs(tls: EtcdNodeTls | undefined): string[] {
  if (!tls) return [];
  return [
    '--cert-file', tls.certFile,
    '--key-file', tls.keyFile,
    ...(tls.clientCertAuth === true ? ['--client-cert-auth', '--trusted-ca-file', tls.caFile] : []),
  ];
}

// ---------------------------------------------------------------------------------------------
// EtcdCluster

export interface EtcdClusterOptions extends Omit<EtcdNodeOptions, 'name' | 'clientPort' | 'peerPort' | 'initialCluster'> {
  /** Number of members (default 3). */
  size?: number;
  /** Each member's peers reach it through a PeerProxy, so that partition() can cut one off. */
  partitionable?: boolean;
}

/** n members on loopback forming one cluster. */
export class EtcdCluster {
  private _members: EtcdNode[] = [];
  private readonly options: EtcdClusterOptions;
  /** With `partitionable`: the proxy in front of each member's peer port, in the members' order. */
  private peerProxies: PeerProxy[] = [];

  constructor(options: EtcdClusterOptions = {}) {
    this.options = options;
  }

  get members(): readonly EtcdNode[] {
    return this._members;
  }

  /** Client URLs of all members (running or not). */
  get clientUrls(): string[] {
    return this._members.map((m) => m.clientUrl);
  }

  /** Comma-separated client URLs (for etcdctl --endpoints). */
  get endpoints(): string {
    return this.clientUrls.join(',');
  }

  /** Members whose process is running and not paused. */
  get liveMembers(): EtcdNode[] {
    return this._members.filter((m) => m.isRunning && !m.isPaused);
  }

  /** Start all members together; resolves once all are healthy and a leader exists. */
  async start(): Promise<void> {
    const size = this.options.size ?? 3;
    const token = this.options.initialClusterToken ?? `etcd-cluster-${randomBytes(6).toString('hex')}`;
    const tag = `${process.pid}-${++nodeCounter}`;
    for (let attempt = 1; ; attempt++) {
      const ports = await findFreePorts(size * 2);
      if (this.options.partitionable === true) {
        this.peerProxies = Array.from({ length: size }, (_, i) => new PeerProxy(ports[2 * i + 1]!));
        await Promise.all(this.peerProxies.map((p) => p.start()));
      }
      this._members = Array.from(
        { length: size },
        (_, i) =>
          new EtcdNode({
            ...this.options,
            name: `m${i + 1}-${tag}`,
            clientPort: ports[2 * i],
            peerPort: ports[2 * i + 1],
            ...(this.peerProxies[i] !== undefined && { advertisePeerUrl: this.peerProxies[i]!.url }),
            initialClusterToken: token,
            // membership changes right after start (restartMember wipe) would otherwise be refused
            // for 5 s ("unhealthy cluster") until every member has been connected that long
            extraArgs: ['--strict-reconfig-check=false', ...(this.options.extraArgs ?? [])],
          }),
      );
      const initialCluster = this._members.map((m) => `${m.name}=${m.advertisedPeerUrl}`).join(',');
      for (const m of this._members) m.initialCluster = initialCluster;
      try {
        await Promise.all(this._members.map((m) => m.launch()));
        await Promise.all(this._members.map((m) => m.waitHealthy()));
        await this.leader(this.options.startTimeoutMs ?? 15_000);
        return;
      } catch (err) {
        const retry = attempt < 4 && this._members.some((m) => m.bindFailed());
        await this.stop();
        if (!retry) throw err;
      }
    }
  }

  /**
   * The member that currently leads: a live member whose own status names itself leader
   * (highest raft term wins if a stale one still answers). Polls until `timeoutMs`.
   */
  async leader(timeoutMs = 10_000): Promise<EtcdNode> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const statuses = await Promise.all(
        this.liveMembers.map(async (m) => {
          try {
            return { m, s: await m.status(300) };
          } catch {
            return undefined;
          }
        }),
      );
      let best: { m: EtcdNode; s: EtcdStatus } | undefined;
      for (const entry of statuses) {
        if (entry === undefined || entry.s.leader === '0' || entry.s.leader !== entry.s.memberId) continue;
        if (best === undefined || entry.s.raftTerm > best.s.raftTerm) best = entry;
      }
      if (best !== undefined) return best.m;
      if (Date.now() >= deadline) {
        const logs = this._members.map((m) => `--- ${m.name} ---\n${m.logs}`).join('\n');
        throw new Error(`no etcd leader among ${this.liveMembers.length} live members after ${timeoutMs} ms\n${logs}`);
      }
      await sleep(20);
    }
  }

  /**
   * Restart a member of this cluster. Without `wipe` it restarts on its own data dir (the
   * initial-cluster flags are then ignored by etcd). With `wipe: true` the data is deleted and the
   * member is removed from the cluster and added again (new member id) through a live member, then
   * started with `--initial-cluster-state existing`: a wiped member cannot simply restart with
   * the same flags, etcd exits with "member ... has already been bootstrapped".
   */
  async restartMember(member: EtcdNode, options: RestartOptions = {}): Promise<void> {
    if (!this._members.includes(member)) throw new Error(`${member.name} is not a member of this cluster`);
    if (options.wipe !== true) {
      await member.restart();
      return;
    }
    await member.kill();
    const via = this.liveMembers.filter((m) => m !== member);
    if (via.length === 0) throw new Error('restartMember({ wipe: true }) needs another live member');
    const api = async <T>(route: string, body: unknown): Promise<T> => {
      let lastError: unknown;
      for (const m of via) {
        try {
          const res = await httpRequest(`${m.clientUrl}${route}`, {
            method: 'POST',
            body: JSON.stringify(body),
            timeoutMs: 5000,
          });
          if (res.status !== 200) throw new Error(`${route} -> ${res.status}: ${res.body}`);
          return JSON.parse(res.body) as T;
        } catch (err) {
          lastError = err;
        }
      }
      throw lastError;
    };
    const list = await api<{ members?: { ID?: string; name?: string; peerURLs?: string[] }[] }>(
      '/v3/cluster/member/list',
      {},
    );
    const entry = list.members?.find((m) => m.name === member.name || (m.peerURLs ?? []).includes(member.advertisedPeerUrl));
    if (entry?.ID !== undefined) await api('/v3/cluster/member/remove', { ID: entry.ID });
    await api('/v3/cluster/member/add', { peerURLs: [member.advertisedPeerUrl] });
    member.initialClusterState = 'existing';
    await member.restart({ wipe: true });
  }

  /**
   * Cuts `member` off from its peers (needs `partitionable`): no connection between it and
   * another member, until heal(); its clients still reach it.
   */
  async partition(member: EtcdNode): Promise<void> {
    const i = this._members.indexOf(member);
    if (i === -1 || this.peerProxies[i] === undefined) throw new Error(`${member.name}: not a member of a partitionable cluster`);
    const id = BigInt((await member.status()).memberId).toString(16);
    this.peerProxies[i]!.memberId = id;
    PeerProxy.cutOff(id);
  }

  /** Ends every partition(). */
  heal(): void {
    PeerProxy.heal();
  }

  /** Kill every member and remove all data dirs. */
  async stop(): Promise<void> {
    await Promise.all(this._members.map((m) => m.stop()));
    await Promise.all(this.peerProxies.splice(0).map((p) => p.close()));
  }
}

// ---------------------------------------------------------------------------------------------
// The shared etcd for the test run (global setup)

export interface StartedEtcd {
  /** Comma-separated client URLs. */
  endpoints: string;
  /** Where it came from. */
  kind: 'external' | 'docker' | 'binary';
  stop(): Promise<void>;
}

export const ETCD_IMAGE = 'quay.io/coreos/etcd:v3.5.17';

/**
 * (1) REGISTRY_TEST_ETCD_ENDPOINTS as-is; (2) a container when a Docker engine answers;
 * (3) an EtcdNode from the `etcd` binary. Throws with install instructions if none works.
 * With REGISTRY_TEST_ETCD_VERSION set, (2) is skipped and (1) must report that version.
 */
export async function startEtcd(): Promise<StartedEtcd> {
  const external = process.env.REGISTRY_TEST_ETCD_ENDPOINTS?.trim();
  const wanted = process.env.REGISTRY_TEST_ETCD_VERSION?.trim() || undefined;
  if (external !== undefined && external !== '') {
    if (wanted !== undefined) {
      // The first endpoint's own account of its version (the gRPC gateway's status; plain http only).
      const first = external.split(',')[0]!.trim();
      const { version } = await memberStatus(first, 5000);
      if (!versionMatches(version, wanted)) {
        throw new Error(
          `REGISTRY_TEST_ETCD_VERSION=${JSON.stringify(wanted)} but REGISTRY_TEST_ETCD_ENDPOINTS (${first}) runs etcd ${JSON.stringify(version)}`,
        );
      }
    }
    return { endpoints: external, kind: 'external', stop: async () => undefined };
  }

  // A pinned version means the binary (the container image is a fixed version of its own).
  let dockerError: unknown = 'not tried: REGISTRY_TEST_ETCD_VERSION asks for the etcd binary';
  const docker =
    wanted !== undefined
      ? undefined
      : await startDockerEtcd().catch((err: unknown) => {
          dockerError = err;
          return undefined;
        });
  if (docker !== undefined) return docker;

  if (findOnPath('etcd') === undefined && process.env.ETCD_BIN === undefined) {
    const why = dockerError instanceof Error ? dockerError.message : String(dockerError);
    throw new Error(
      `No etcd for the integration tests: no Docker engine (${why}) and no \`etcd\` binary on PATH.\n${INSTALL_HINT}`,
    );
  }
  const node = new EtcdNode({ name: 'registry-test' });
  await node.start();
  return { endpoints: node.clientUrl, kind: 'binary', stop: () => node.stop() };
}

/** Resolves undefined-free: throws when no container runtime answers (fast, a few ms + import). */
async function startDockerEtcd(): Promise<StartedEtcd> {
  const tc = await import('testcontainers');
  await tc.getContainerRuntimeClient();
  const container = await new tc.GenericContainer(ETCD_IMAGE)
    .withCommand([
      'etcd',
      '--listen-client-urls', 'http://0.0.0.0:2379',
      '--advertise-client-urls', 'http://0.0.0.0:2379',
      // same raft timings as EtcdNode, so 1 s lease TTLs behave the same in both
      '--heartbeat-interval', '20',
      '--election-timeout', '200',
    ])
    .withExposedPorts(2379)
    .withWaitStrategy(
      tc.Wait.forHttp('/health', 2379).forResponsePredicate((body) => /"health"\s*:\s*"true"/.test(body)),
    )
    .withStartupTimeout(60_000)
    .start();
  const endpoints = `http://${container.getHost()}:${container.getMappedPort(2379)}`;
  return {
    endpoints,
    kind: 'docker',
    stop: async () => {
      await container.stop();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// etcdctl

/**
 * Run `etcdctl --endpoints <endpoints> ...args` with ETCDCTL_API=3; resolves stdout,
 * rejects with an Error carrying stderr. Endpoints: a comma-separated string or an array.
 * Tip: for values starting with `-` put `--` before the key.
 */
export function etcdctl(endpoints: string | readonly string[], ...args: string[]): Promise<string> {
  const eps = typeof endpoints === 'string' ? endpoints : endpoints.join(',');
  return new Promise((resolve, reject) => {
    execFile(
      etcdctlBinary(),
      ['--endpoints', eps, '--dial-timeout', '2s', '--command-timeout', '5s', ...args],
      { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 30_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`etcdctl ${args.join(' ')} failed: ${stderr.trim() || err.message}`));
        } else {
          resolve(stdout);
        }
      },
    );
  });
}

/** The state letter of /proc/PID/stat (R, S, T, …), or undefined where there is no /proc. */
function processState(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}
