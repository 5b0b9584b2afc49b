/**
 * TLS material: reading the CA, certificate and key files (once, at
 * construction, with errors that name the file), checking that they are what
 * they claim to be, and recognising a failed TLS handshake among etcd3's errors.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import * as fs from 'node:fs';
import { isRecoverableError } from 'etcd3';

/** Largest credential file read: a CA bundle of the whole public web is ~250 KiB. */
export const MAX_CREDENTIAL_FILE_BYTES = 1024 * 1024;

/** Why a credential file cannot be used; the message never contains the file's content. */
export class CredentialFileError extends Error {
  override name = 'CredentialFileError';
}

/**
 * The bytes of a regular file of at most MAX_CREDENTIAL_FILE_BYTES. A FIFO, a
 * device or a directory is refused before it is opened: reading one could block for ever.
 */
export function readCredentialFile(path: string): Buffer {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(path);
  } catch (e) {
    throw new CredentialFileError(`cannot read the file: ${describeFsError(e)}`, { cause: e });
  }
  if (!stat.isFile()) throw new CredentialFileError('it is not a regular file');
  if (stat.size > MAX_CREDENTIAL_FILE_BYTES) {
    throw new CredentialFileError(`the file has ${stat.size} bytes, more than ${MAX_CREDENTIAL_FILE_BYTES}`);
  }
  try {
    return fs.readFileSync(path);
  } catch (e) {
    throw new CredentialFileError(`cannot read the file: ${describeFsError(e)}`, { cause: e });
  }
}

function describeFsError(e: unknown): string {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  switch (code) {
    case 'ENOENT':
      return 'no such file (ENOENT)';
    case 'EACCES':
    case 'EPERM':
      return `permission denied (${code})`;
    case 'EISDIR':
      return 'it is a directory (EISDIR)';
    default:
      return code ?? (e instanceof Error ? e.message : String(e));
  }
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The PEM certificates in `pem`, each parsed; throws when there is none or one is broken. */
export function parseCertificates(pem: Buffer): X509Certificate[] {
  const blocks = pem.toString('latin1').match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new CredentialFileError('it holds no PEM certificate ("-----BEGIN CERTIFICATE-----")');
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch {
      throw new CredentialFileError(`certificate ${i + 1} of ${blocks.length} in it cannot be parsed`);
    }
  });
}

/**
 * Checks a client certificate chain and its private key: the key parses, is
 * not encrypted (grpc cannot use a passphrase) and belongs to the first certificate.
 * The messages say what is wrong without quoting the key.
 */
export function checkKeyPair(certChain: Buffer, privateKey: Buffer): { certificate: X509Certificate } | { problem: 'cert' | 'key'; reason: string } {
  let certificate: X509Certificate;
  try {
    certificate = parseCertificates(certChain)[0]!;
  } catch (e) {
    return { problem: 'cert', reason: (e as Error).message };
  }
  const text = privateKey.toString('latin1');
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type:\s*4,ENCRYPTED/.test(text)) {
    return { problem: 'key', reason: 'the private key is encrypted; grpc needs an unencrypted PEM key (openssl pkey -in key.pem -out plain.pem)' };
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) {
    return { problem: 'key', reason: 'it holds no PEM private key ("-----BEGIN PRIVATE KEY-----")' };
  }
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(privateKey);
  } catch {
    return { problem: 'key', reason: 'the private key in it cannot be parsed' };
  }
  if (!certificate.checkPrivateKey(key)) {
    return { problem: 'key', reason: 'the private key does not belong to the first certificate of the certificate file' };
  }
  return { certificate };
}

/**
 * A failed TLS handshake, as grpc-js reports it inside an UNAVAILABLE error:
 * our side did not trust etcd's certificate (or its name), or etcd refused ours.
 * Retrying does not fix these; a new certificate or CA does.
 */
export function tlsFailure(e: unknown): string | undefined {
  if (!(e instanceof Error) || !isRecoverableError(e)) return undefined;
  const m = e.message;
  if (
    /unable to (verify|get local issuer)|self[- ]signed certificate|certificate has expired|certificate is not yet valid|does not match certificate's altnames|ERR_TLS_CERT_ALTNAME_INVALID|CERTIFICATE_VERIFY_FAILED/i.test(
      m,
    )
  ) {
    return `etcd's certificate is not trusted (${lastError(m)}): set REGISTRY_TLS_CA_PATH to the CA that signed it, and use an endpoint host that the certificate names`;
  }
  if (/alert (bad certificate|certificate required|handshake failure|certificate unknown|unsupported certificate|unknown ca)|alert number (40|42|43|46|48|116)\b|peer did not return a certificate/i.test(m)) {
    return `etcd refused this client's certificate (${lastError(m)}): with --client-cert-auth, set REGISTRY_TLS_CERT_PATH and REGISTRY_TLS_KEY_PATH to a certificate signed by etcd's --trusted-ca-file`;
  }
  if (/wrong version number|packet length too long|http request/i.test(m)) {
    return `the TLS handshake failed (${lastError(m)}): etcd does not seem to serve TLS on this port; use http:// endpoints and unset REGISTRY_USE_TLS, or enable TLS on etcd`;
  }
  return undefined;
}

/**
 * A hint for a TLS connection that broke off without saying why (grpc-js often
 * reports "Last error: null"): most often TLS towards a port that serves plain
 * text. Not certain enough to stop retrying, so only a question in the message.
 */
export function tlsHint(e: unknown, tlsOn: boolean): string {
  if (!tlsOn || !(e instanceof Error)) return '';
  if (/ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|deadline/i.test(e.message)) return '';
  return ' (TLS is on and the connection broke off: does etcd serve TLS on this port? If not, use http:// endpoints and unset REGISTRY_USE_TLS and REGISTRY_TLS_*)';
}

/** The useful part of grpc-js's "No connection established. Last error: …" message. */
function lastError(message: string): string {
  const m = /Last error: (?:Error: )?([\s\S]*?)(?:\s*\(\d{4}-\d\d-\d\dT[^)]*\))?\.?\s*(?:Resolution note:.*)?$/.exec(message);
  const text = (m?.[1] ?? message).trim();
  // OpenSSL's "808C…:error:0A000412:SSL routines:ssl3_read_bytes:sslv3 alert bad certificate:../deps/…:1601:SSL alert number 42"
  const ssl = /SSL routines:[^:]*:([^:]+)/.exec(text);
  return (ssl?.[1] ?? text).trim();
}
