#!/usr/bin/env bash
# kvserver against real etcd, same machine, same run: a three-member cluster of each on loopback with the same
# flags, one system at a time, loaded by the same kvbench binary; writes docs/benchmarks.md and its plots
# (docs/benchmarks/*.png) through bench/report.py.
#
# A benchmark, not a test: `swift test` does not run it. Sizes come from the environment, so a quick run exists:
#
#   bench/compare.sh                                    # the full run (1,000,000 keys loaded, 10,000 watchers)
#   KEYS=100000 TOTAL=10000 WATCHERS=1000 CHECK_PERF=0 bench/compare.sh     # a quick run (a few minutes)
#
#   KEYS            keys loaded before measuring RSS, data-dir size and restart time (default 1000000)
#   VALUE_BYTES     bytes per value of every workload and of the loaded keys (default 256)
#   TOTAL           requests per multi-client workload (put, range, txn-put, lease-keepalive; default 20000)
#   TOTAL_ONE       puts of the one-client workload (default 2000)
#   WATCHERS        watchers of the watch workload (default 10000), over WATCH_STREAMS streams (default 100),
#   WATCH_PUTS      receiving WATCH_PUTS puts (default 100) made at WATCH_PUT_RATE per second (default 100)
#   CHECK_PERF      1 runs `etcdctl check perf --load=s` (60 s) against each (default 1)
#   HEARTBEAT, ELECTION (ms; default 100, 1000), SNAPSHOT_COUNT (default 100000): flags of both clusters
#   RUN_TIMEOUT     seconds any one kvbench run may take (default 300); KEEP=1 keeps data, logs and raw results
#   SYSTEMS         which to run, in order (default "etcd kvserver")
#   KVSERVER, KVBENCH  prebuilt binaries to use (both set: no build); DOCS where to write (default docs)
set -euo pipefail
cd "$(dirname "$0")/.."

started_at=$(date -u '+%Y-%m-%d %H:%M')
KEYS=${KEYS:-1000000}
VALUE_BYTES=${VALUE_BYTES:-256}
TOTAL=${TOTAL:-20000}
TOTAL_ONE=${TOTAL_ONE:-2000}
WATCHERS=${WATCHERS:-10000}
WATCH_STREAMS=${WATCH_STREAMS:-100}
WATCH_PUTS=${WATCH_PUTS:-100}
WATCH_PUT_RATE=${WATCH_PUT_RATE:-100}
CHECK_PERF=${CHECK_PERF:-1}
HEARTBEAT=${HEARTBEAT:-100}
ELECTION=${ELECTION:-1000}
SNAPSHOT_COUNT=${SNAPSHOT_COUNT:-100000}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
SYSTEMS=${SYSTEMS:-etcd kvserver}
DOCS=${DOCS:-docs}
export ETCDCTL_API=3

# What the run needs from Debian: etcd and etcdctl 3.4, and matplotlib for the plots.
need_packages=()
command -v etcd >/dev/null || need_packages+=(etcd-server)
command -v etcdctl >/dev/null || need_packages+=(etcd-client)
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || need_packages+=(python3-matplotlib)
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "== installing ${need_packages[*]}"
  apt-get install -y "${need_packages[@]}" || { apt-get update && apt-get install -y "${need_packages[@]}"; }
fi
ETCD=$(command -v etcd)
ETCDCTL=$(command -v etcdctl)

if [ -z "${KVSERVER:-}" ] || [ -z "${KVBENCH:-}" ]; then
  scripts/install-build-deps.sh
  echo "== building kvserver and kvbench (release)"
  swift build -c release --product kvserver --product kvbench
  BIN=$(swift build -c release --show-bin-path)
  KVSERVER=$BIN/kvserver
  KVBENCH=$BIN/kvbench
fi

source bench/lib.sh
bench_init kvbench-compare
results=$work/results
mkdir -p "$results"

now() { date +%s.%N; }

# start_cluster NAME BINARY: three members infra1..3 on fresh ports with the flags of this run; sets ENDPOINTS.
start_cluster() {
  choose_ports
  launch "$1" "$2"
  wait_serving "$1"
}

launch() {
  launch_members "$1" "$2" "compare-$1" --heartbeat-interval "$HEARTBEAT" --election-timeout "$ELECTION" \
    --snapshot-count "$SNAPSHOT_COUNT"
}

# bench NAME WORKLOAD ARGS...: one kvbench run, its JSON kept as results/NAME/WORKLOAD.json.
bench() {
  local name=$1 workload=$2
  shift 2
  echo "-- $name $workload: kvbench $*"
  "$KVBENCH" "$@" --timeout "$RUN_TIMEOUT" --json >"$results/$name/$workload.json"
  /usr/bin/python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print("   %d/%d ok, %d errors, %.0f/s, p50 %.2f ms, p99 %.2f ms" % (r["successes"], r["total"], r["errors"],
      r["throughputPerSecond"], r["latencyMilliseconds"]["p50"], r["latencyMilliseconds"]["p99"]))' "$results/$name/$workload.json"
}

# member_metrics NAME LABEL: RSS (KiB) of each member and the size (bytes) of its data dir, as KEY=VALUE lines.
member_metrics() {
  local name=$1 label=$2 i
  for i in 1 2 3; do
    echo "${label}_rss_kib_infra$i=$(awk '/^VmRSS:/ {print $2}' "/proc/${pids[$((i - 1))]}/status")"
    echo "${label}_data_bytes_infra$i=$(du -sb "$work/$name/infra$i.etcd" | cut -f1)"
    # The state database alone (etcd: bbolt's db; kvserver: the SQLite state database and its WAL), without the
    # Raft log, which etcd preallocates in 64 MB WAL segments.
    echo "${label}_state_bytes_infra$i=$(cat "$work/$name/infra$i.etcd"/member/snap/db "$work/$name/infra$i.etcd"/member/kv.db \
      "$work/$name/infra$i.etcd"/member/kv.db-wal 2>/dev/null | wc -c)"
  done >>"$results/$name/metrics.env"
}

# wait_caught_up: bounded (120 s) wait until every member reports the same revision (the load has been applied).
wait_caught_up() {
  for _ in $(seq 240); do
    if "$ETCDCTL" --endpoints="$ENDPOINTS" endpoint status -w json | /usr/bin/python3 -c '
import json, sys
revisions = {status["Status"]["header"]["revision"] for status in json.load(sys.stdin)}
sys.exit(0 if len(revisions) == 1 else 1)'; then return 0; fi
    sleep 0.5
  done
  echo "members did not converge on one revision within 120 s" >&2
}

run_system() {
  local name=$1 binary=$2 leader
  mkdir -p "$results/$name" "$work/$name"
  # Other work on the machine shows up in every figure; the docs say how busy it was.
  echo "load_average_1min=$(cut -d' ' -f1 /proc/loadavg)" >>"$results/$name/metrics.env"
  echo "== $name: three members, heartbeat $HEARTBEAT ms, election $ELECTION ms, snapshot-count $SNAPSHOT_COUNT"
  start_cluster "$name" "$binary"
  member_metrics "$name" idle
  leader=$(leader_endpoint)
  echo "   leader $leader; members $ENDPOINTS"
  local keys=(--key-size 16 --val-size "$VALUE_BYTES")

  bench "$name" put-1-client put --endpoints "$leader" --clients 1 --conns 1 --total "$TOTAL_ONE" \
    "${keys[@]}" --key-space-size 100000 --key-prefix bench/put/
  bench "$name" put-64-clients put --endpoints "$leader" --clients 64 --conns 8 --total "$TOTAL" \
    "${keys[@]}" --key-space-size 100000 --key-prefix bench/put/
  bench "$name" txn-put-64-clients txn-put --endpoints "$leader" --clients 64 --conns 8 --total "$TOTAL" \
    "${keys[@]}" --key-space-size 100000 --key-prefix bench/txn/
  # The ranges read one existing key through every member, as etcd's documented range benchmark does.
  "$ETCDCTL" --endpoints="$leader" put bench/range-key "$(head -c "$VALUE_BYTES" /dev/zero | tr '\0' v)" >/dev/null
  bench "$name" range-linearizable-64-clients range bench/range-key --consistency l --endpoints "$ENDPOINTS" \
    --clients 64 --conns 8 --total "$TOTAL"
  bench "$name" range-serializable-64-clients range bench/range-key --consistency s --endpoints "$ENDPOINTS" \
    --clients 64 --conns 8 --total "$TOTAL"
  bench "$name" lease-keepalive-64-clients lease-keepalive --endpoints "$ENDPOINTS" --clients 64 --conns 8 \
    --total "$TOTAL"
  bench "$name" watch watch --endpoints "$ENDPOINTS" --conns 8 --watchers "$WATCHERS" --streams "$WATCH_STREAMS" \
    --put-total "$WATCH_PUTS" --put-rate "$WATCH_PUT_RATE" --val-size "$VALUE_BYTES"

  if [ "$CHECK_PERF" = 1 ]; then
    echo "-- $name: etcdctl check perf --load=s"
    local status=0
    "$ETCDCTL" --endpoints="$ENDPOINTS" check perf --load=s >"$work/$name-check-perf.raw" 2>&1 || status=$?
    # The progress bar redraws with carriage returns; keep the verdict lines.
    tr '\r' '\n' <"$work/$name-check-perf.raw" | grep -E '^(PASS|FAIL|Slowest|Stddev|Error)' \
      >"$results/$name/check-perf.txt" || true
    echo "exit status $status" >>"$results/$name/check-perf.txt"
    sed 's/^/   /' "$results/$name/check-perf.txt"
  fi

  # Load KEYS keys (transactions of 100 puts, so loading is not the measurement), then sizes and RSS.
  local txns=$(((KEYS + 99) / 100))
  bench "$name" load-keys txn-put --endpoints "$leader" --clients 16 --conns 4 --total "$txns" --txn-ops 100 \
    --sequential-keys --key-space-size "$KEYS" --key-size 16 --val-size "$VALUE_BYTES" --key-prefix bench/load/
  wait_caught_up
  sleep 2
  member_metrics "$name" loaded
  local counted
  counted=$("$ETCDCTL" --endpoints="$leader" get --prefix bench/load/ --limit=1 -w json --command-timeout=60s |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin).get("count", 0))')
  echo "loaded_keys=$counted" >>"$results/$name/metrics.env"
  echo "   $counted keys under bench/load/; $(grep '^loaded_' "$results/$name/metrics.env" | tr '\n' ' ')"

  # Restart: time from starting the processes to every member serving with those keys.
  stop_all
  local started ready
  started=$(now)
  launch "$name" "$binary"
  wait_serving "$name"
  ready=$(now)
  echo "restart_seconds=$(awk -v a="$started" -v b="$ready" 'BEGIN {printf "%.3f", b - a}')" >>"$results/$name/metrics.env"
  member_metrics "$name" restarted
  echo "   restart to serving: $(grep '^restart_seconds' "$results/$name/metrics.env")"
  stop_all
}

for system in $SYSTEMS; do
  case "$system" in
    etcd) run_system etcd "$ETCD" ;;
    kvserver) run_system kvserver "$KVSERVER" ;;
    *) echo "unknown system $system" >&2; exit 2 ;;
  esac
done

command_line="KEYS=$KEYS VALUE_BYTES=$VALUE_BYTES TOTAL=$TOTAL TOTAL_ONE=$TOTAL_ONE WATCHERS=$WATCHERS WATCH_STREAMS=$WATCH_STREAMS WATCH_PUTS=$WATCH_PUTS WATCH_PUT_RATE=$WATCH_PUT_RATE CHECK_PERF=$CHECK_PERF HEARTBEAT=$HEARTBEAT ELECTION=$ELECTION SNAPSHOT_COUNT=$SNAPSHOT_COUNT bench/compare.sh"
/usr/bin/python3 bench/report.py --results "$results" --docs "$DOCS" \
  --command "$command_line" \
  --machine "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) memory, $(uname -sr)" \
  --date "$started_at–$(date -u '+%H:%M UTC')" \
  --etcd-version "$("$ETCD" --version | head -n1 | awk '{print $3}')" \
  --kvserver-version "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- Sources || echo '+local changes')"
echo "== wrote $DOCS/benchmarks.md and $DOCS/benchmarks/*.png"
