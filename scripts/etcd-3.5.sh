#!/usr/bin/env bash
# Fetches etcd 3.5.30 (Debian sid's etcd-server and etcd-client 3.5.30-2) into .etcd/3.5.30
# without installing or upgrading anything on the machine: a private apt sources list and state
# folder for sid, `apt-get download`, then `dpkg-deb -x`. Prints the folder to put first on PATH.
# Idempotent: a folder that already holds both binaries is reused.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSION=3.5.30
PACKAGE_VERSION=3.5.30-2
out="$PWD/.etcd/$VERSION"
bin="$out/usr/bin"
# `etcd --version` is read whole before it is matched: with pipefail, `| grep -q` exits at the first
# line and etcd, still writing the next ones, dies of SIGPIPE (about 1 run in 20 here), which failed CI.
is_wanted() { [ -x "$1/etcd" ] && [ -x "$1/etcdctl" ] && [[ "$("$1/etcd" --version)" == *"etcd Version: $VERSION"* ]]; }
if is_wanted "$bin"; then
  echo "$bin"
  exit 0
fi

# The mirror the machine's own apt sources name (deb822 or one-line format).
# Only live lines of enabled files: `URIs: …` (deb822) or `deb …` (one-line), never comments.
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
  grep -E '^[[:space:]]*(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?( |$)' | sed -n '1{s/ //g;p;}' || true)
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror sid main" >"$work/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$work/sources.list"
  -o "Dir::Etc::SourceParts=/dev/null"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
  -o "Dir::State::Status=/var/lib/dpkg/status"
  -o "APT::Get::List-Cleanup=0"
  -o "APT::Sandbox::User=root"
)
apt-get "${apt_opts[@]}" -qq update </dev/null >&2
(cd "$work/debs" && apt-get "${apt_opts[@]}" -qq download "etcd-server=$PACKAGE_VERSION" "etcd-client=$PACKAGE_VERSION" </dev/null >&2)
rm -rf "$out"
mkdir -p "$out"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$out"; done
is_wanted "$bin" || { echo "etcd $VERSION was not extracted into $out" >&2; exit 1; }
echo "$bin"
