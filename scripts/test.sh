#!/usr/bin/env bash
# `npm test`: the typecheck, the unit tests, then the integration and fault suites twice:
#   1. against the etcd on PATH, which must be a 3.4 (Debian's etcd-server: 3.4.23);
#   2. against etcd 3.5.30, fetched by scripts/etcd-3.5.sh into .etcd/ and put first on PATH;
# and a representative part of the integration suite once more on each version through
# `etcd grpc-proxy` (REGISTRY_TEST_VIA_GRPC_PROXY=1), the way large fleets reach etcd.
# REGISTRY_TEST_ETCD_VERSION tells the harness which version each run must find (it fails the run
# otherwise). Every step runs even when an earlier one failed; the summary at the end lists them
# all, and the exit status is non-zero when any failed.
# Arguments are passed to every vitest run as filters: `npm test -- test/integration/cli.test.ts`.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
filters=("$@")
summary=()
failed=0
total_passed=0
total_failed=0
total_skipped=0

# step NAME COMMAND...: run it, note "ok"/"FAILED" and the test counts of its vitest JSON report.
step() {
  local name=$1 started=$SECONDS status counts=''
  shift
  echo
  echo "== $name"
  "$@"
  status=$?
  if [ -f "$reports/$name.json" ]; then
    counts=$(node -e 'const r = require(process.argv[1]);
      console.log(`${r.numPassedTests} passed, ${r.numFailedTests} failed, ${r.numPendingTests + r.numTodoTests} skipped of ${r.numTotalTests}`)' \
      "$reports/$name.json")
    read -r p f k < <(node -e 'const r = require(process.argv[1]); console.log(r.numPassedTests, r.numFailedTests, r.numPendingTests + r.numTodoTests)' "$reports/$name.json")
    total_passed=$((total_passed + p)) total_failed=$((total_failed + f)) total_skipped=$((total_skipped + k))
  fi
  if [ "$status" -eq 0 ]; then
    summary+=("ok      $name (${counts:+$counts, }$((SECONDS - started)) s)")
  else
    summary+=("FAILED  $name (exit $status${counts:+, $counts}, $((SECONDS - started)) s)")
    failed=1
    # What vitest reports besides failed tests (an unhandled rejection fails the run with every
    # test passed), repeated by the summary: a CI log may keep only its end.
    if [ -f "$reports/$name.log" ]; then
      while IFS= read -r line; do summary+=("          $line"); done < <(sed 's/\x1b\[[0-9;]*m//g' "$reports/$name.log" |
        grep -a -E -A1 -e '^⎯+ Unhandled (Rejection|Error) ⎯+$' -e '^This error originated in' | grep -a -v -E '^(--)?$|^⎯' |
        sed -E 's/ test file\. It doesn.t mean.*/ test file/' | head -n 12)
    fi
  fi
}

# run_vitest REPORT ARGS...: `vitest run ARGS FILTERS`, also writing the JSON report the summary reads.
run_vitest() {
  local report=$1
  shift
  npx vitest run --reporter=default --reporter=json --outputFile.json="$reports/$report.json" "$@" "${filters[@]}" 2>&1 | tee "$reports/$report.log"
}

# The integration files keep the 2 cores about 90 % busy, 2 files at a time (vitest.config.ts). The
# fault files mostly wait (for a TTL, a restart, a timeout) on etcd processes of their own: they run
# as a step of their own (the worker count is global to a vitest run), 3 files at a time. On this
# 2-core machine (soak 8 s, 20 model operations, as in .ci/run) a fault step took 164-193 s two at a
# time and 114-122 s three at a time, in three runs without a failure (3.4 twice, 3.5.30 once, that
# one while other tests ran beside it). At 4, a fresh-clone run once lost the lease in
# cluster.test.ts's silent-member case (tight margins). FAULT_WORKERS=n overrides it (a positive integer).
FAULT_WORKERS=${FAULT_WORKERS:-3}
if ! [[ $FAULT_WORKERS =~ ^[1-9][0-9]*$ ]]; then
  echo "FAULT_WORKERS (how many fault files run at once) must be a positive integer, got \"$FAULT_WORKERS\"" >&2
  exit 2
fi

etcd34() {
  REGISTRY_TEST_ETCD_VERSION=3.4 run_vitest "etcd 3.4" --project integration
}

etcd34_faults() {
  REGISTRY_TEST_ETCD_VERSION=3.4 run_vitest "etcd 3.4 faults" --project faults --maxWorkers="$FAULT_WORKERS"
}

etcd35() {
  local bin
  bin=$(bash scripts/etcd-3.5.sh) || return 1
  PATH="$bin:$PATH" REGISTRY_TEST_ETCD_VERSION=3.5.30 run_vitest "etcd 3.5.30" --project integration
}

etcd35_faults() {
  local bin
  bin=$(bash scripts/etcd-3.5.sh) || return 1
  PATH="$bin:$PATH" REGISTRY_TEST_ETCD_VERSION=3.5.30 run_vitest "etcd 3.5.30 faults" --project faults --maxWorkers="$FAULT_WORKERS"
}

# Through the proxy, a representative part of the integration suite (the whole of it passes too:
# REGISTRY_TEST_VIA_GRPC_PROXY=1 npx vitest run --project integration): register, discover, change
# events, SIGTERM removal, crash expiry, foreign values, health, subscriptions, fetch and choosing.
# test/faults/grpc-proxy.test.ts (data loss and compaction behind a proxy) runs with the faults.
PROXY_FILES=(test/integration/registry.test.ts test/integration/hostile-data.test.ts test/integration/health.test.ts
  test/integration/shutdown.test.ts test/integration/subscriptions.test.ts test/integration/fetch.test.ts test/integration/choose.test.ts)

# The files to run through the proxy: those, unless the arguments name files of their own.
proxy_files() {
  if [ ${#filters[@]} -eq 0 ]; then printf '%s\n' "${PROXY_FILES[@]}"; fi
}

etcd34_proxy() {
  local files
  mapfile -t files < <(proxy_files)
  REGISTRY_TEST_VIA_GRPC_PROXY=1 REGISTRY_TEST_ETCD_VERSION=3.4 run_vitest "etcd 3.4 via grpc-proxy" --project integration "${files[@]}"
}

etcd35_proxy() {
  local bin
  bin=$(bash scripts/etcd-3.5.sh) || return 1
  local files
  mapfile -t files < <(proxy_files)
  PATH="$bin:$PATH" REGISTRY_TEST_VIA_GRPC_PROXY=1 REGISTRY_TEST_ETCD_VERSION=3.5.30 run_vitest "etcd 3.5.30 via grpc-proxy" --project integration "${files[@]}"
}

step "typecheck" npx tsc -p tsconfig.json --noEmit
step "unit" run_vitest "unit" --project unit
step "etcd 3.4" etcd34
step "etcd 3.4 faults" etcd34_faults
step "etcd 3.5.30" etcd35
step "etcd 3.5.30 faults" etcd35_faults
step "etcd 3.4 via grpc-proxy" etcd34_proxy
step "etcd 3.5.30 via grpc-proxy" etcd35_proxy

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
echo "tests: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit "$failed"
