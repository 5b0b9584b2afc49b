// Type-only import: this package is CommonJS for TypeScript, while vitest/config is ESM.
import type { ViteUserConfig } from 'vitest/config' with { 'resolution-mode': 'import' };

// Three projects, all run by `vitest run`:
//  - unit:        pure tests, no etcd;
//  - integration: one shared etcd (global setup), at most 2 test files at once;
//  - faults:      tests that start/kill/pause their own etcd processes, each file in a process
//                 of its own, after the other two (sequence.groupOrder) so they do not compete
//                 with them for CPU. They mostly wait (for a TTL, a restart, a timeout): one at a
//                 time, the 2 cores were 5-20 % busy and the suite took 222 s; two at a time,
//                 120-159 s. `npm test` (scripts/test.sh) runs them as a vitest run of their own
//                 with --maxWorkers=$FAULT_WORKERS (3 unless set; see there why not 4).
// Pool/worker options are global in vitest 3 (not per project): forks (real child processes, so
// signals and process.on('exit') work), at most 2 workers (the CI machine has 2 cores shared with etcd).
const config: ViteUserConfig = {
  test: {
    pool: 'forks',
    maxWorkers: 2,
    minWorkers: 1,
    // A project (or a filter) that matches no file yet must not fail the run.
    passWithNoTests: true,
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 30_000,
          hookTimeout: 30_000,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'faults',
          include: ['test/faults/**/*.test.ts'],
          globalSetup: ['test/support/etcd-version-setup.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
};

export default config;
