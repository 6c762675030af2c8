#!/usr/bin/env bash
# A/B of write paths: real etcd and one or more kvserver builds, each as a fresh three-member cluster on loopback
# (the flags of bench/compare.sh), loaded by kvbench with puts from 1 client and from 64 clients over 8
# connections to the leader. The systems take turns, ROUNDS times, so that a busy spell of the machine falls on
# all of them; prints every run and then the median per system.
#
# A benchmark, not a test. Used for the before/after figures in docs/performance.md:
#
#   bench/ab.sh OLD_KVSERVER NEW_KVSERVER          # ROUNDS=3 ONE=1000 MANY=6000; ETCD, KVBENCH to override
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
ONE=${ONE:-1000}
MANY=${MANY:-6000}
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

work=$(mktemp -d "${TMPDIR:-/tmp}/kvbench-ab.XXXXXX")
pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# Ports below the kernel's ephemeral range: a peer dialling a port in it before its member listens can connect
# to itself (TCP simultaneous open) and take the port.
read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range || ephemeral_low=32768
base=$((ephemeral_low > 12000 ? ephemeral_low - 12000 : 1024))

# run SYSTEM_LABEL BINARY ROUND: one cluster, both workloads, one JSON line per workload into $work/results.
run() {
  local label=$1 binary=$2 round=$3 i cluster="" endpoints="" leader
  local offset=$(((round * 7 + RANDOM % 50) * 10))
  for i in 1 2 3; do
    cluster+="${cluster:+,}infra$i=http://127.0.0.1:$((base + offset + i * 2))"
    endpoints+="${endpoints:+,}127.0.0.1:$((base + offset + i * 2 + 1))"
  done
  rm -rf "$work/data"
  for i in 1 2 3; do
    local peer=$((base + offset + i * 2)) client=$((base + offset + i * 2 + 1))
    env -u ETCD_NAME -u ETCD_DATA_DIR "$binary" --name "infra$i" --data-dir "$work/data/infra$i" \
      --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "$cluster" --initial-cluster-token "ab-$round" --initial-cluster-state new \
      --heartbeat-interval 100 --election-timeout 1000 >>"$work/$label.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 300); do
    "$ETCDCTL" --endpoints="$endpoints" endpoint health --command-timeout=2s >/dev/null 2>&1 && break
    sleep 0.1
  done
  leader=$("$ETCDCTL" --endpoints="$endpoints" endpoint status -w json | /usr/bin/python3 -c '
import json, sys
print(next(s["Endpoint"] for s in json.load(sys.stdin) if s["Status"]["leader"] == s["Status"]["header"]["member_id"]))')
  for workload in one many; do
    local clients=1 conns=1 total=$ONE
    [ "$workload" = many ] && clients=64 conns=8 total=$MANY
    "$KVBENCH" put --endpoints "$leader" --clients "$clients" --conns "$conns" --total "$total" --key-size 16 \
      --val-size 256 --key-space-size 100000 --json |
      /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin); l = r["latencyMilliseconds"]
print(json.dumps({"system": sys.argv[1], "round": int(sys.argv[2]), "workload": sys.argv[3],
                  "throughput": r["throughputPerSecond"], "p50": l["p50"], "p99": l["p99"], "errors": r["errors"]}))
' "$label" "$round" "$workload" | tee -a "$work/results"
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
/usr/bin/python3 - "$work/results" "$@" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
names = {"etcd": "etcd"} | {f"kvserver-{i + 1}": path for i, path in enumerate(sys.argv[2:])}
print(f"{'system':<40} {'put 1 client req/s':>18} {'p50 ms':>7} {'p99 ms':>7} {'put 64 clients req/s':>21} {'p50 ms':>7} {'p99 ms':>7}")
for system, name in names.items():
    cells = []
    for workload in ("one", "many"):
        picked = [r for r in rows if r["system"] == system and r["workload"] == workload]
        cells += [statistics.median(r[k] for r in picked) for k in ("throughput", "p50", "p99")]
    print(f"{name:<40} {cells[0]:>18.0f} {cells[1]:>7.2f} {cells[2]:>7.2f} {cells[3]:>21.0f} {cells[4]:>7.2f} {cells[5]:>7.2f}")
EOF
