#!/usr/bin/env bash
# etcd's own performance check, `etcdctl check perf` (the real etcdctl 3.4, Debian's etcd-client), against a
# three-member kvserver cluster (release build) and then against a three-member real etcd (Debian's etcd-server)
# started with the same flags, both on loopback in a temporary directory; prints both results side by side.
#
# A benchmark, not a test: `swift test` does not run it. Each check runs for 60 s (load s: 50 clients, 150 puts/s of
# 1 KiB values with 256-byte keys); the clusters run one after the other, never together.
#
#   bench/check-perf.sh                 # LOAD=s|m|l|xl, HEARTBEAT=100, ELECTION=1000 (ms); KEEP=1 keeps data and logs
set -euo pipefail
cd "$(dirname "$0")/.."

LOAD=${LOAD:-s}
HEARTBEAT=${HEARTBEAT:-100}
ELECTION=${ELECTION:-1000}
ETCDCTL=${ETCDCTL:-$(command -v etcdctl || true)}
ETCD=${ETCD:-$(command -v etcd || true)}
[ -x "$ETCDCTL" ] || { echo "etcdctl not found (apt-get install etcd-client)" >&2; exit 1; }
[ -x "$ETCD" ] || { echo "etcd not found (apt-get install etcd-server)" >&2; exit 1; }
export ETCDCTL_API=3

echo "== building kvserver (release)"
swift build -c release --product kvserver
KVSERVER="$(swift build -c release --show-bin-path)/kvserver"

source bench/lib.sh
bench_init check-perf

# start_cluster NAME BINARY: three members infra1..3 on fresh ports; sets ENDPOINTS.
start_cluster() {
  choose_ports
  launch_members "$1" "$2" "check-perf-$1" --heartbeat-interval "$HEARTBEAT" --election-timeout "$ELECTION"
  wait_serving "$1" 60
}

# run_check NAME: check perf against ENDPOINTS; the result lines go to $work/NAME.result.
run_check() {
  local name=$1 status=0
  echo "== $name: etcdctl check perf --load=$LOAD against $ENDPOINTS"
  "$ETCDCTL" --endpoints="$ENDPOINTS" endpoint status -w table
  # The progress bar redraws with carriage returns; keep the verdict lines.
  "$ETCDCTL" --endpoints="$ENDPOINTS" check perf --load="$LOAD" >"$work/$name.raw" 2>&1 || status=$?
  tr '\r' '\n' <"$work/$name.raw" | grep -E '^(PASS|FAIL|Slowest|Stddev|Error)' >"$work/$name.result" || true
  echo "exit status $status" >>"$work/$name.result"
  cat "$work/$name.result"
  "$ETCDCTL" --endpoints="$ENDPOINTS" endpoint status -w table
}

start_cluster kvserver "$KVSERVER"
run_check kvserver
stop_all

start_cluster etcd "$ETCD"
run_check etcd
stop_all

echo
echo "== etcdctl check perf --load=$LOAD, three members on loopback, heartbeat $HEARTBEAT ms, election $ELECTION ms"
printf '%-48s | %s\n' "kvserver (release build)" "etcd $("$ETCD" --version | head -n1 | awk '{print $3}')"
printf '%-48s-+-%s\n' "------------------------------------------------" "------------------------------------------------"
paste -d '\t' "$work/kvserver.result" "$work/etcd.result" | while IFS=$'\t' read -r left right; do
  printf '%-48s | %s\n' "$left" "$right"
done
