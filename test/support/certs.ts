/**
 * Throw-away certificates for TLS tests, made with the `openssl` binary: a CA, a server
 * certificate for loopback (SAN IP:127.0.0.1, DNS:localhost), a client certificate, and a
 * second, unrelated CA (with its own client certificate) to prove that a wrong CA is refused.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { findOnPath } from './etcd';

export interface TestCerts {
  readonly dir: string;
  /** The CA that signed the server and client certificates. */
  readonly caCert: string;
  readonly caKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
  /** A CA unrelated to the others, and a client certificate it signed. */
  readonly otherCaCert: string;
  readonly otherClientCert: string;
  readonly otherClientKey: string;
  remove(): Promise<void>;
}

function openssl(cwd: string, ...args: string[]): Promise<void> {
  const bin = findOnPath('openssl');
  if (bin === undefined) return Promise.reject(new Error('the `openssl` binary was not found on PATH'));
  return new Promise((resolve, reject) => {
    execFile(bin, args, { cwd, timeout: 30_000 }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`openssl ${args.join(' ')} failed: ${stderr.trim() || err.message}`));
      else resolve();
    });
  });
}

/** A self-signed CA: `<name>.crt` / `<name>.key`. */
async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(
    dir,
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  );
}

/** A leaf certificate `<name>.crt` / `<name>.key` signed by `<ca>`. */
async function makeLeaf(dir: string, ca: string, name: string, extensions: string): Promise<void> {
  await openssl(
    dir,
    'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`,
  );
  await fsp.writeFile(path.join(dir, `${name}.ext`), extensions);
  await openssl(
    dir,
    'x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`,
    // a serial of its own: -CAcreateserial would race on <ca>.srl between concurrent signings
    '-set_serial', `0x${randomBytes(8).toString('hex')}`,
    '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`,
  );
}

/** Generates every certificate into a new temporary directory. */
export async function makeTestCerts(): Promise<TestCerts> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'registry-certs-'));
  try {
    await Promise.all([makeCa(dir, 'ca'), makeCa(dir, 'other-ca')]);
    await Promise.all([
      makeLeaf(
        dir,
        'ca',
        'server',
        'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n',
      ),
      makeLeaf(dir, 'ca', 'client', 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n'),
      makeLeaf(dir, 'other-ca', 'other-client', 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n'),
    ]);
  } catch (e) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const file = (name: string): string => path.join(dir, name);
  return {
    dir,
    caCert: file('ca.crt'),
    caKey: file('ca.key'),
    serverCert: file('server.crt'),
    serverKey: file('server.key'),
    clientCert: file('client.crt'),
    clientKey: file('client.key'),
    otherCaCert: file('other-ca.crt'),
    otherClientCert: file('other-client.crt'),
    otherClientKey: file('other-client.key'),
    remove: () => fsp.rm(dir, { recursive: true, force: true }),
  };
}
