#!/usr/bin/env bash
# A/B of request paths: real etcd and one or more kvserver builds, each as a fresh three-member cluster on loopback
# (the flags of bench/compare.sh), loaded by kvbench: by default puts to the leader from 1 client and from 64
# clients over 8 connections, and serializable ranges of one key from 64 clients spread over the members. The
# systems take turns, ROUNDS times, so that a busy spell of the machine falls on all of them; prints every run and
# then the median per system and workload, with its ratio to etcd's.
#
# A benchmark, not a test. Used for the before/after figures in docs/performance.md:
#
#   bench/ab.sh OLD_KVSERVER NEW_KVSERVER          # ROUNDS=3 ONE=1000 MANY=6000; ETCD, KVBENCH to override
#   WORKLOADS="put-1 put-64 range-s-64 range-l-64" bench/ab.sh ...              # which workloads, in order
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
ONE=${ONE:-1000}
MANY=${MANY:-6000}
WORKLOADS=${WORKLOADS:-put-1 put-64 range-s-64}
ETCD=${ETCD:-$(command -v etcd || true)}
ETCDCTL=${ETCDCTL:-$(command -v etcdctl || true)}
[ -x "$ETCD" ] || { echo "etcd not found (apt-get install etcd-server)" >&2; exit 1; }
[ -x "$ETCDCTL" ] || { echo "etcdctl not found (apt-get install etcd-client)" >&2; exit 1; }
[ $# -ge 1 ] || { echo "usage: bench/ab.sh KVSERVER_BINARY..." >&2; exit 2; }
if [ -z "${KVBENCH:-}" ]; then
  swift build -c release --product kvbench >/dev/null
  KVBENCH="$(swift build -c release --show-bin-path)/kvbench"
fi
export ETCDCTL_API=3

source bench/lib.sh
bench_init kvbench-ab

# The CPU time (user + system, in clock ticks) the members have used so far: per request, it is what the
# members cost, whatever else the machine is doing.
member_cpu_ticks() {
  local pid total=0
  for pid in "${pids[@]}"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

# run SYSTEM_LABEL BINARY ROUND: one cluster, every workload, one JSON line per workload into $work/results.
run() {
  local label=$1 binary=$2 round=$3 leader
  choose_ports
  # Data and logs under the system's label, so that a member that fails to start is shown with its own log.
  rm -rf "$work/$label" "$work/$label"-infra*.log
  launch_members "$label" "$binary" "ab-$round" --heartbeat-interval 100 --election-timeout 1000
  wait_serving "$label" 30
  leader=$(leader_endpoint)
  "$ETCDCTL" --endpoints="$leader" put bench/range-key "$(head -c 256 /dev/zero | tr '\0' v)" >/dev/null
  for workload in $WORKLOADS; do
    local args
    case "$workload" in
      put-1) args=(put --endpoints "$leader" --clients 1 --conns 1 --total "$ONE") ;;
      put-64) args=(put --endpoints "$leader" --clients 64 --conns 8 --total "$MANY") ;;
      range-s-64) args=(range bench/range-key --consistency s --endpoints "$ENDPOINTS" --clients 64 --conns 8
                        --total "$MANY") ;;
      range-l-64) args=(range bench/range-key --consistency l --endpoints "$ENDPOINTS" --clients 64 --conns 8
                        --total "$MANY") ;;
      *) echo "unknown workload $workload" >&2; exit 2 ;;
    esac
    [ "${args[0]}" = put ] && args+=(--key-size 16 --val-size 256 --key-space-size 100000)
    local cpu_before
    cpu_before=$(member_cpu_ticks)
    "$KVBENCH" "${args[@]}" --json >"$work/run.json"
    /usr/bin/python3 -c '
import json, os, sys
r = json.load(open(sys.argv[1])); l = r["latencyMilliseconds"]
cpu_ms = (int(sys.argv[6]) - int(sys.argv[5])) * 1000 / os.sysconf("SC_CLK_TCK")
print(json.dumps({"system": sys.argv[2], "round": int(sys.argv[3]), "workload": sys.argv[4],
                  "throughput": r["throughputPerSecond"], "p50": l["p50"], "p99": l["p99"], "errors": r["errors"],
                  "cpu_ms_per_request": cpu_ms / max(r["successes"], 1)}))
' "$work/run.json" "$label" "$round" "$workload" "$cpu_before" "$(member_cpu_ticks)" | tee -a "$work/results"
  done
  stop_all
}

for round in $(seq "$ROUNDS"); do
  run etcd "$ETCD" "$round"
  n=0
  for binary in "$@"; do
    n=$((n + 1))
    run "kvserver-$n" "$binary" "$round"
  done
done

echo "== medians over $ROUNDS rounds (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
/usr/bin/python3 - "$work/results" "$WORKLOADS" "$@" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
workloads = sys.argv[2].split()
names = {"etcd": "etcd"} | {f"kvserver-{i + 1}": path for i, path in enumerate(sys.argv[3:])}
for workload in workloads:
    print(f"{workload:<40} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'÷ etcd':>7} {'member CPU ms/req':>18}")
    base = None
    for system, name in names.items():
        picked = [r for r in rows if r["system"] == system and r["workload"] == workload]
        throughput, p50, p99, cpu = (statistics.median(r[k] for r in picked)
                                     for k in ("throughput", "p50", "p99", "cpu_ms_per_request"))
        base = base or throughput
        print(f"  {name:<38} {throughput:>9.0f} {p50:>7.2f} {p99:>7.2f} {throughput / base:>7.2f} {cpu:>18.3f}")
EOF
