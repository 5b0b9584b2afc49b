/**
 * How the command line writes: whole lines to stdout (results) and stderr
 * (diagnostics), aligned tables for humans, timestamps, lease ids as etcdctl
 * prints them, and error messages squeezed onto one line.
 */

export function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}

export function err(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** Now, as an ISO 8601 UTC timestamp with milliseconds. */
export function timestamp(date = new Date()): string {
  return date.toISOString();
}

/** Rows as lines with aligned columns (two spaces apart); the last column is not padded. */
export function table(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, [...cell].length)));
  return rows.map((row) =>
    row
      .map((cell, i) => (i === row.length - 1 ? cell : cell + ' '.repeat(widths[i]! - [...cell].length)))
      .join('  ')
      .trimEnd(),
  );
}

/**
 * etcd3 hands lease ids over as decimal strings; etcdctl prints them as 16 hex
 * digits and accepts that back (`etcdctl lease timetolive 0a66a1fe58714e06`).
 * Undefined for "no lease" (0).
 */
export function leaseHex(lease: string | number | undefined): string | undefined {
  if (lease === undefined || lease === '' || String(lease) === '0') return undefined;
  try {
    return BigInt(lease).toString(16).padStart(16, '0');
  } catch {
    return String(lease);
  }
}

/**
 * Collapses line breaks and runs of white space, so an error stays one line, and
 * trims grpc-js's wrapping of connection errors down to the cause.
 */
export function oneLine(text: string): string {
  return text
    .replace(/\s*Resolution note:\s*(?=;|$)/g, '')
    // grpc-js: "14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED …" → "connect ECONNREFUSED …"
    .replace(/\b14 UNAVAILABLE: No connection established\. Last error: (?:Error: )?(.*?)\.?(?=;|$)/g, '$1')
    .replace(/\s*\n\s*/g, ' ')
    .replace(/\s{2,}/g, ' ')
    .trim();
}

/** `1 endpoint` / `2 endpoints` */
export function plural(n: number, word: string, many = `${word}s`): string {
  return `${n} ${n === 1 ? word : many}`;
}

/** Compact JSON of metadata, as stored. */
export function compact(value: unknown): string {
  return printable(JSON.stringify(value) ?? String(value));
}

/**
 * Characters a terminal acts on rather than shows: C0 and C1 controls (line breaks and escape
 * sequences among them), DEL, the line and paragraph separators, and the bidirectional
 * embeddings, overrides and isolates that reorder what follows. Joiners (emoji sequences,
 * Persian) and the left-to-right and right-to-left marks are text.
 */
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u2028-\u202e\u2066-\u2069]/g;

/**
 * Text from etcd (a key, a reason quoting a value, metadata) as one line that shows what it
 * holds: every character a terminal would act on is written as a \u escape, so a key cannot
 * forge lines or send escape sequences. Text without any is returned as it is.
 */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

