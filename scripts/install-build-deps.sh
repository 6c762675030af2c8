#!/usr/bin/env bash
# Installs, on Debian, what building kvserver needs from the system when it is missing: SQLite (the Raft log and the
# state) and pkg-config (which finds it). Extra package names given as arguments are installed too when missing
# (.ci/run adds what the tests use).
set -euo pipefail

missing=()
for pkg in libsqlite3-dev pkg-config "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y "${missing[@]}" || { apt-get update && apt-get install -y "${missing[@]}"; }
fi
