/**
 * `doctor`: checks the configuration and the way to etcd one step at a time and
 * prints one line per check (✓ passed, ✗ failed, - skipped) with, for each
 * failure, how to fix it. Bounded: every etcd call carries a deadline.
 *
 * The write probe is `$PREFIX/services/.doctor-<12 hex>`, directly under the
 * services root with no further `/`. Every service prefix ends with `/`
 * (`$PREFIX/services/web/`), so the probe lies inside none of them: no
 * per-service list or watch ever sees it, and it can never decode as an
 * endpoint. A whole-registry watch (`services()`) sees it as an invalid record;
 * `watch` and `ls` recognise the name and stay quiet about it. It lives on a 5 s
 * lease, so even a doctor killed halfway leaves nothing behind for long.
 */
import { randomBytes } from 'node:crypto';
import {
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdPermissionDeniedError,
  Range,
  type IMember,
  type IStatusResponse,
} from 'etcd3';
import { resolveConfig, type RegistryConfig } from '../config';
import { type Connection, isUnreachableError } from '../etcd/connection';
import { RegistryConfigError, isRegistryError, quote } from '../errors';
import { KeySpace } from '../keys';
import { tlsFailure } from '../tls';
import { type Command, type Parsed, timeoutSeconds } from './args';
import { oneLine, out, plural, printable } from './output';
import { DEFAULT_TIMEOUT_SECONDS, connection, explain, loadConfig } from './settings';

const PROBE_PATTERN = /^\.doctor-[0-9a-f]{12}$/;
const PROBE_VALUE = 'etcd-service-registry doctor probe: safe to delete';
/** The TTL asked for the lease-clock check. */
const CLOCK_TTL_SECONDS = 5;

export function doctorProbeKey(keys: KeySpace): string {
  return `${keys.root}.doctor-${randomBytes(6).toString('hex')}`;
}

/** True for a key written by a doctor run (see the module comment). */
export function isDoctorProbeKey(keys: KeySpace, key: string): boolean {
  return key.startsWith(keys.root) && PROBE_PATTERN.test(key.slice(keys.root.length));
}

export const doctor: Command = {
  name: 'doctor',
  synopsis: 'doctor',
  summary: 'check the configuration and the connection to etcd, and say what to fix',
  help: `Checks, in order, and prints one line per check (✓ passed, ✗ failed, - skipped):
  configuration   every REGISTRY_* variable parses
  etcd <url>      each endpoint answers on its own (a client per endpoint)
  TLS             the handshake with etcd works (REGISTRY_TLS_*), or TLS is off
  cluster         one cluster, a leader, no alarms (skipped if the role may not ask)
  authentication  the credentials work, or etcd needs none
  permissions     read, write and delete under $PREFIX/services/ (with a probe key
                  $PREFIX/services/.doctor-<random> on a 5 s lease, removed at once)
  lease clock     a fresh ${CLOCK_TTL_SECONDS} s lease reports about ${CLOCK_TTL_SECONDS} s left; no minimum TTL above REGISTRY_LEASE_SECONDS
Exit status 0 when every check passed, 1 otherwise.

Options:
  --timeout SECONDS  deadline for each endpoint to answer (default ${DEFAULT_TIMEOUT_SECONDS})
  -h, --help         show this help`,
  options: {},
  positionals: { names: [], required: 0 },
  run,
};

type Outcome = 'ok' | 'fail' | 'skip';

interface Check {
  readonly outcome: Outcome;
  readonly title: string;
  readonly detail: string;
  readonly fix?: string;
}

const MARK: Record<Outcome, string> = { ok: '✓', fail: '✗', skip: '-' };

async function run(args: Parsed): Promise<number> {
  const timeout = timeoutSeconds(args, 'doctor') ?? DEFAULT_TIMEOUT_SECONDS;
  let failures = 0;
  const report = (check: Check): void => {
    if (check.outcome === 'fail') failures++;
    out(`${MARK[check.outcome]} ${check.title}: ${oneLine(check.detail)}`);
    if (check.fix !== undefined) out(`    fix: ${oneLine(check.fix)}`);
  };
  const skipRest = (titles: readonly string[], why: string): void => {
    for (const title of titles) report({ outcome: 'skip', title, detail: `skipped: ${why}` });
  };
  const finish = (): number => {
    out(failures === 0 ? 'all checks passed' : `${plural(failures, 'problem')} found`);
    return failures === 0 ? 0 : 1;
  };

  const refused = (e: RegistryConfigError): Check => ({
    outcome: 'fail',
    title: 'configuration',
    detail: e.message,
    fix: `correct or unset ${e.variable} (.env.example in the package describes every variable)`,
  });
  let config: RegistryConfig;
  try {
    config = loadConfig({ connectTimeoutSeconds: timeout });
  } catch (e) {
    if (!(e instanceof RegistryConfigError)) throw e;
    report(refused(e));
    return finish();
  }
  // The environment as a service reads it: the variables this command sets itself
  // (the connect timeout, the shutdown signals) must parse too. etcd is checked all the same.
  const asService = serviceConfigError();
  report(asService === undefined ? configuration(config) : refused(asService));

  const probes = await Promise.all(config.etcdEndpoints.map((endpoint) => probeEndpoint(config, endpoint)));
  for (const probe of probes) report(probe.check);
  report(tlsCheck(config, probes));
  const answering = probes.filter((p) => p.answered).map((p) => p.endpoint);
  if (answering.length === 0) {
    skipRest(['cluster', 'authentication', 'permissions', 'lease clock'], 'no etcd endpoint answered');
    return finish();
  }
  report(await cluster(config, probes, answering));
  const auth = await authentication(config, answering);
  report(auth.check);
  if (!auth.usable) {
    skipRest(['permissions', 'lease clock'], 'the client cannot authenticate');
    return finish();
  }
  const prefix = await prefixChecks(config);
  report(prefix.permissions);
  report(prefix.lease);
  return finish();
}

/** What `new Registry()` would refuse in the environment, if anything. */
function serviceConfigError(): RegistryConfigError | undefined {
  try {
    resolveConfig({});
    return undefined;
  } catch (e) {
    if (e instanceof RegistryConfigError) return e;
    throw e;
  }
}

function configuration(config: RegistryConfig): Check {
  const { tls, auth } = config;
  const parts = [
    `etcd ${config.etcdEndpoints.join(',')}`,
    `prefix ${quote(config.keyPrefix)} (keys under ${quote(new KeySpace(config.keyPrefix).root)})`,
    `lease ${config.leaseSeconds} s`,
    tls === undefined ? 'no TLS' : `TLS${tls.cert === undefined ? '' : ' with a client certificate'}`,
    auth === undefined ? 'no credentials' : `user ${quote(auth.username)}`,
  ];
  return { outcome: 'ok', title: 'configuration', detail: parts.join(', ') };
}

// ---- endpoints and TLS -------------------------------------------------------------------

interface Probe {
  readonly endpoint: string;
  /** The member answered (possibly with "authenticate first"). */
  readonly answered: boolean;
  readonly status: IStatusResponse | undefined;
  readonly tlsError: boolean;
  readonly check: Check;
}

/** Errors that prove the member answered but wants credentials first. */
function isAuthRefusal(e: unknown): boolean {
  return (
    e instanceof EtcdPermissionDeniedError ||
    e instanceof EtcdInvalidAuthTokenError ||
    e instanceof EtcdAuthenticationFailedError ||
    (e instanceof Error && /user name is empty/.test(e.message))
  );
}

const ms = (since: number): string => `${Date.now() - since} ms`;

/** One member on its own connection (TLS, no credentials: Status needs none). */
async function probeEndpoint(config: RegistryConfig, endpoint: string): Promise<Probe> {
  const conn = connection(config, [endpoint], false);
  const title = `etcd ${endpoint}`;
  const started = Date.now();
  try {
    const status = await conn.call((c) => c.maintenance.status({ deadline: Date.now() + config.connectTimeoutMs }));
    const learner = status.isLearner ? ', a learner (not voting)' : '';
    return {
      endpoint,
      answered: true,
      status,
      tlsError: false,
      check: { outcome: 'ok', title, detail: `answered in ${ms(started)}: etcd ${status.version}, member ${hex(status.header.member_id)}${learner}` },
    };
  } catch (e) {
    if (isAuthRefusal(e)) {
      return { endpoint, answered: true, status: undefined, tlsError: false, check: { outcome: 'ok', title, detail: `answered in ${ms(started)} (its status needs authentication)` } };
    }
    const tlsText = tlsFailure(e);
    if (tlsText !== undefined) {
      // "<what failed> (<openssl's words>): <what to set>"
      const split = tlsText.indexOf('): ');
      const check: Check =
        split < 0
          ? { outcome: 'fail', title, detail: tlsText }
          : { outcome: 'fail', title, detail: tlsText.slice(0, split + 1), fix: tlsText.slice(split + 3) };
      return { endpoint, answered: false, status: undefined, tlsError: true, check };
    }
    const message = e instanceof Error ? e.message : String(e);
    const check: Check = {
      outcome: 'fail',
      title,
      detail: `${isUnreachableError(e) ? 'not reachable' : 'failed'} after ${ms(started)}: ${message}`,
      fix: `make sure etcd listens there (etcdctl --endpoints ${endpoint} endpoint health) or correct REGISTRY_ETCD_ENDPOINTS${
        config.tls === undefined ? '; if etcd serves TLS, set REGISTRY_USE_TLS=1 (and REGISTRY_TLS_CA_PATH)' : ''
      }; --timeout SECONDS waits longer`,
    };
    return { endpoint, answered: false, status: undefined, tlsError: false, check };
  } finally {
    conn.close();
  }
}

function tlsCheck(config: RegistryConfig, probes: readonly Probe[]): Check {
  const { tls } = config;
  if (tls === undefined) {
    return { outcome: 'skip', title: 'TLS', detail: 'not used: the endpoints are http://, so traffic to etcd is not encrypted (REGISTRY_USE_TLS=1 turns it on)' };
  }
  const failed = probes.filter((p) => p.tlsError).map((p) => p.endpoint);
  if (failed.length > 0) return { outcome: 'fail', title: 'TLS', detail: `the handshake failed with ${failed.join(', ')} (see above)` };
  const ok = probes.filter((p) => p.answered).length;
  if (ok === 0) return { outcome: 'skip', title: 'TLS', detail: 'skipped: no endpoint answered' };
  const ca = tls.caPath === undefined ? "the system's root CAs" : `REGISTRY_TLS_CA_PATH=${tls.caPath}`;
  const cert = tls.certPath === undefined ? 'no client certificate' : `client certificate REGISTRY_TLS_CERT_PATH=${tls.certPath}`;
  return { outcome: 'ok', title: 'TLS', detail: `handshake done with ${plural(ok, 'endpoint')}: server certificate checked against ${ca}; ${cert}` };
}

// ---- cluster -----------------------------------------------------------------------------

async function cluster(config: RegistryConfig, probes: readonly Probe[], answering: readonly string[]): Promise<Check> {
  const title = 'cluster';
  const statuses = probes.filter((p): p is Probe & { status: IStatusResponse } => p.status !== undefined);
  if (statuses.length === 0) {
    return { outcome: 'skip', title, detail: 'skipped: the members would not report their status to this client (the registry does not need it)' };
  }
  const clusters = new Set(statuses.map((p) => p.status.header.cluster_id));
  if (clusters.size > 1) {
    return {
      outcome: 'fail',
      title,
      detail: `the endpoints belong to ${clusters.size} different clusters: ${statuses.map((p) => `${p.endpoint} → ${hex(p.status.header.cluster_id)}`).join(', ')}`,
      fix: 'list the members of one cluster only in REGISTRY_ETCD_ENDPOINTS',
    };
  }
  const leaderless = statuses.filter((p) => p.status.leader === '0').map((p) => p.endpoint);
  if (leaderless.length > 0) {
    return {
      outcome: 'fail',
      title,
      detail: `no leader seen by ${leaderless.join(', ')}: the cluster has lost its quorum or is electing`,
      fix: `check the members: etcdctl --endpoints ${answering.join(',')} endpoint status --cluster -w table`,
    };
  }
  const alarms = [...new Set(statuses.flatMap((p) => p.status.errors ?? []))];
  if (alarms.length > 0) {
    return {
      outcome: 'fail',
      title,
      detail: `alarm raised: ${alarms.join('; ')}`,
      fix: 'etcdctl alarm list; for NOSPACE, compact and defragment, then etcdctl alarm disarm',
    };
  }
  const first = statuses[0]!.status;
  let members: IMember[] | undefined;
  const conn = connection(config, answering, false);
  try {
    members = (await conn.call((c) => c.cluster.memberList({}))).members;
  } catch {
    members = undefined; // not every role may list members; the rest still says enough
  } finally {
    conn.close();
  }
  const leader = members?.find((m) => m.ID === first.leader);
  const parts = [
    `id ${hex(first.header.cluster_id)}`,
    members === undefined ? undefined : plural(members.length, 'member'),
    `leader ${leader?.name ? `${printable(leader.name)} (${hex(first.leader)})` : hex(first.leader)}, term ${first.raftTerm}`,
    'no alarms',
  ].filter((p) => p !== undefined);
  let detail = parts.join(', ');
  if (members && members.length > config.etcdEndpoints.length) {
    detail += `; REGISTRY_ETCD_ENDPOINTS lists ${config.etcdEndpoints.length} of them (list more to fail over)`;
  }
  return { outcome: 'ok', title, detail };
}

// ---- authentication ----------------------------------------------------------------------

async function authentication(config: RegistryConfig, answering: readonly string[]): Promise<{ check: Check; usable: boolean }> {
  const title = 'authentication';
  const root = new KeySpace(config.keyPrefix).root;
  const { auth } = config;
  if (auth) {
    // etcd3 logs in before its first call, so Status tests the login. etcd 3.4 answers Status to
    // any user; 3.5 refuses it to a role without the permission, after a successful login.
    const conn = connection(config, answering);
    try {
      await conn.call((c) => c.maintenance.status());
      return { usable: true, check: { outcome: 'ok', title, detail: `user ${quote(auth.username)} logged in` } };
    } catch (e) {
      if (e instanceof EtcdPermissionDeniedError) {
        return { usable: true, check: { outcome: 'ok', title, detail: `user ${quote(auth.username)} logged in (and may not read the status)` } };
      }
      if (e instanceof EtcdAuthenticationFailedError) {
        const from = auth.passwordFile === undefined ? 'REGISTRY_ETCD_PASSWORD' : `REGISTRY_ETCD_PASSWORD_FILE (${auth.passwordFile})`;
        return {
          usable: false,
          check: {
            outcome: 'fail',
            title,
            detail: `etcd rejected the password of user ${quote(auth.username)} (wrong password, or no such user)`,
            fix: `correct ${from} or REGISTRY_ETCD_USERNAME; try them with: etcdctl --endpoints ${answering.join(',')} --user ${shellQuote(auth.username)} get --prefix --keys-only ${shellQuote(root)}`,
          },
        };
      }
      if (e instanceof Error && /authentication is not enabled/.test(e.message)) {
        return {
          usable: false,
          check: {
            outcome: 'fail',
            title,
            detail: `REGISTRY_ETCD_USERNAME is set (user ${quote(auth.username)}) but etcd has authentication disabled, and refuses every request of a client that logs in`,
            fix: 'enable authentication on etcd (etcdctl auth enable), or unset REGISTRY_ETCD_USERNAME and REGISTRY_ETCD_PASSWORD',
          },
        };
      }
      return { usable: false, check: { outcome: 'fail', title, detail: explain(e, config, `log in as ${quote(auth.username)}`).message } };
    } finally {
      conn.close();
    }
  }
  const conn = connection(config, answering);
  try {
    await conn.call((c) => c.kv.range({ key: Buffer.from(root), count_only: true }));
    return { usable: true, check: { outcome: 'ok', title, detail: 'not enabled on etcd, and no credentials configured' } };
  } catch (e) {
    if (isAuthRefusal(e)) {
      return {
        usable: false,
        check: {
          outcome: 'fail',
          title,
          detail: `etcd has authentication enabled and no credentials are configured (etcd answered: ${etcdMessage(e)})`,
          fix: `set REGISTRY_ETCD_USERNAME and REGISTRY_ETCD_PASSWORD (or REGISTRY_ETCD_PASSWORD_FILE) for a user whose role has readwrite on ${quote(root)}`,
        },
      };
    }
    return { usable: false, check: { outcome: 'fail', title, detail: explain(e, config, `read ${quote(root)}`).message } };
  } finally {
    conn.close();
  }
}

// ---- permissions and lease clock ---------------------------------------------------------

async function prefixChecks(config: RegistryConfig): Promise<{ permissions: Check; lease: Check }> {
  const keys = new KeySpace(config.keyPrefix);
  const conn = connection(config);
  let leaseId: string | undefined;
  try {
    const lease = await leaseClock(conn, config).then(
      (r) => {
        leaseId = r.leaseId;
        return r.check;
      },
      (e: unknown): Check => ({ outcome: 'fail', title: 'lease clock', detail: explain(e, config, 'grant a lease').message }),
    );
    const permissions = await probePrefix(conn, config, keys, leaseId);
    return { permissions, lease };
  } finally {
    if (leaseId !== undefined) {
      const id = leaseId;
      await conn.call((c) => c.leaseClient.leaseRevoke({ ID: id })).catch(() => undefined); // expires in 5 s anyway
    }
    conn.close();
  }
}

async function leaseClock(conn: Connection, config: RegistryConfig): Promise<{ leaseId: string; check: Check }> {
  const title = 'lease clock';
  const started = Date.now();
  const grant = await conn.call((c) => c.leaseClient.leaseGrant({ TTL: CLOCK_TTL_SECONDS }));
  const ttl = await conn.call((c) => c.leaseClient.leaseTimeToLive({ ID: grant.ID }));
  const elapsed = Date.now() - started;
  const granted = Number(grant.TTL);
  const remaining = Number(ttl.TTL);
  const leaseId = grant.ID;
  if (granted > CLOCK_TTL_SECONDS && config.leaseSeconds < granted) {
    return {
      leaseId,
      check: {
        outcome: 'fail',
        title,
        detail: `etcd granted ${granted} s when asked for ${CLOCK_TTL_SECONDS} s: its minimum lease TTL (1.5 × election timeout) is above REGISTRY_LEASE_SECONDS=${config.leaseSeconds}, which etcd silently raises`,
        fix: `set REGISTRY_LEASE_SECONDS to ${granted} or more, or lower etcd's --election-timeout`,
      },
    };
  }
  // etcd truncates the remaining time to whole seconds: right after the grant it says TTL or TTL-1.
  const lowest = granted - 1 - Math.ceil(elapsed / 1000);
  if (!(remaining >= lowest && remaining <= granted)) {
    return {
      leaseId,
      check: {
        outcome: 'fail',
        title,
        detail: `a fresh ${granted} s lease had ${remaining} s left after ${elapsed} ms (expected ${Math.max(lowest, 0)} to ${granted})`,
        fix: "etcd's lease timing is off: check the leader's load, disk latency (etcdctl check perf) and clock; endpoints may vanish before their TTL",
      },
    };
  }
  const raised = granted > CLOCK_TTL_SECONDS ? ` (etcd's minimum lease TTL is ${granted} s, not above REGISTRY_LEASE_SECONDS=${config.leaseSeconds})` : '';
  return {
    leaseId,
    check: { outcome: 'ok', title, detail: `a fresh ${granted} s lease had ${remaining} s left after ${elapsed} ms${raised}` },
  };
}

/** Read the prefix, then put, read back and delete the probe key; report the first step refused. */
async function probePrefix(conn: Connection, config: RegistryConfig, keys: KeySpace, leaseId: string | undefined): Promise<Check> {
  const title = `permissions on ${quote(keys.root)}`;
  const probe = doctorProbeKey(keys);
  const key = Buffer.from(probe);
  const root = Range.prefix(keys.root);
  const allowed: string[] = [];
  const steps: [string, () => Promise<unknown>][] = [
    ['read', () => conn.call((c) => c.kv.range({ key: root.start, range_end: root.end, count_only: true }))],
    ['write', () => conn.call((c) => c.kv.put({ key, value: Buffer.from(PROBE_VALUE), lease: leaseId }))],
    [
      'read back',
      async () => {
        const res = await conn.call((c) => c.kv.range({ key }));
        if (res.kvs[0]?.value.toString() !== PROBE_VALUE) throw new Error(`${probe} did not read back as written`);
      },
    ],
    ['delete', () => conn.call((c) => c.kv.deleteRange({ key }))],
  ];
  for (const [step, action] of steps) {
    try {
      await action();
      allowed.push(step);
    } catch (e) {
      if (allowed.includes('write')) {
        await conn.call((c) => c.kv.deleteRange({ key })).catch(() => undefined); // its lease ends it otherwise
      }
      const cause = isRegistryError(e) && e.cause !== undefined ? e.cause : e;
      if (cause instanceof EtcdPermissionDeniedError) {
        const user = config.auth?.username;
        const role = user === undefined ? '<role>' : ((await rolesOf(conn, user)) ?? '<role>');
        return {
          outcome: 'fail',
          title,
          detail: `${allowed.length > 0 ? `${allowed.join(', ')} allowed, ` : ''}${step} denied${user === undefined ? '' : ` for user ${quote(user)}`}`,
          fix: `grant readwrite on the prefix: etcdctl --user root role grant-permission ${role} --prefix=true readwrite ${shellQuote(keys.root)}`,
        };
      }
      return { outcome: 'fail', title, detail: `${step} of ${probe} failed: ${explain(e, config, `${step} ${quote(probe)}`).message}` };
    }
  }
  return { outcome: 'ok', title, detail: `read, write and delete allowed (probe key ${probe}, removed)` };
}

/** The user's roles, comma-separated, if etcd lets the user see them. */
async function rolesOf(conn: Connection, user: string): Promise<string | undefined> {
  try {
    const res = await conn.call((c) => c.auth.userGet({ name: user }));
    return res.roles.length > 0 ? res.roles.join(',') : undefined;
  } catch {
    return undefined;
  }
}

// ---- helpers -----------------------------------------------------------------------------

/** etcd ids as etcdctl prints them (hex). */
function hex(id: string): string {
  try {
    return BigInt(id).toString(16);
  } catch {
    return id;
  }
}

function etcdMessage(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  return quote(message.replace(/^\d+ [A-Z_]+: /, ''));
}

function shellQuote(text: string): string {
  return /^[A-Za-z0-9._/:=-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}
