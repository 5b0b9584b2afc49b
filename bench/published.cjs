/**
 * Preloaded (`node --require`) by `npm run bench` and every child it starts: the library is
 * measured as it is published, `dist/` (tsc's output, what users run), not as tsx transpiles
 * `lib/` on the fly. tsx (esbuild with keepNames) wraps every named closure in a `__name()`
 * call, an Object.defineProperty per closure created, which etcd3 (the baseline, plain
 * JavaScript from node_modules) never pays: on register()'s path that was 7 µs of the writer's
 * turn (figure 1). `npm run bench` builds first; BENCH_SOURCES=1 measures lib/ through tsx.
 */
'use strict';
const Module = require('node:module');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const lib = path.join(root, 'lib') + path.sep;

/** Every file under `dir` is older than `than` (ms). */
function olderThan(dir, than) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory() ? !olderThan(file, than) : fs.statSync(file).mtimeMs > than) return false;
  }
  return true;
}

if (process.env.BENCH_SOURCES !== '1') {
  let checked = false;
  const resolve = Module._resolveFilename;
  Module._resolveFilename = function (request, parent, ...rest) {
    const file = resolve.call(this, request, parent, ...rest);
    if (!file.startsWith(lib) || !file.endsWith('.ts')) return file;
    // Once: the whole build against the whole of lib/ (dist/ files also load each other).
    if (!checked) {
      const index = path.join(root, 'dist/index.js');
      if (!fs.existsSync(index) || !olderThan(lib, fs.statSync(index).mtimeMs)) {
        throw new Error('dist/ is missing or older than lib/: run `npm run build` (npm run bench does), or set BENCH_SOURCES=1 to measure lib/ through tsx');
      }
      checked = true;
    }
    return path.join(root, 'dist', file.slice(lib.length, -'.ts'.length) + '.js');
  };
}
