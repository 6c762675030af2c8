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

work=$(mktemp -d "${TMPDIR:-/tmp}/check-perf.XXXXXX")
pids=()
stop_all() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    # Bounded: a member that ignores SIGTERM for 10 s is killed.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  stop_all
  if [ "${KEEP:-}" = 1 ]; then echo "data and logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nothing listens on, below the kernel's ephemeral range: each member also binds an internal port
# the kernel picks (port 0), which must not land on a port chosen here for a member started later.
read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range || ephemeral_low=32768
port_base=$((ephemeral_low > 12000 ? ephemeral_low - 12000 : 1024))
used_ports=" "
free_port() {
  local port
  while :; do
    port=$((port_base + RANDOM % (ephemeral_low - port_base)))
    case "$used_ports" in *" $port "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      used_ports+="$port "
      echo "$port"
      return
    fi
  done
}

# start_cluster NAME BINARY: three members infra1..3 on fresh ports; sets ENDPOINTS.
start_cluster() {
  local name=$1 binary=$2 i
  local -a client peer
  for i in 1 2 3; do client[$i]=$(free_port); peer[$i]=$(free_port); done
  local initial="infra1=http://127.0.0.1:${peer[1]},infra2=http://127.0.0.1:${peer[2]},infra3=http://127.0.0.1:${peer[3]}"
  ENDPOINTS="127.0.0.1:${client[1]},127.0.0.1:${client[2]},127.0.0.1:${client[3]}"
  for i in 1 2 3; do
    env -u ETCD_NAME -u ETCD_DATA_DIR "$binary" --name "infra$i" --data-dir "$work/$name/infra$i.etcd" \
      --listen-client-urls "http://127.0.0.1:${client[$i]}" --advertise-client-urls "http://127.0.0.1:${client[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${peer[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${peer[$i]}" \
      --initial-cluster "$initial" --initial-cluster-token "check-perf-$name" --initial-cluster-state new \
      --heartbeat-interval "$HEARTBEAT" --election-timeout "$ELECTION" \
      >"$work/$name-infra$i.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 120); do
    if "$ETCDCTL" --endpoints="$ENDPOINTS" endpoint health --command-timeout=2s >/dev/null 2>&1; then return 0; fi
    for i in 1 2 3; do
      if ! kill -0 "${pids[$((${#pids[@]} - 4 + i))]}" 2>/dev/null; then
        echo "$name: member infra$i exited; its log:" >&2
        tail -n 40 "$work/$name-infra$i.log" >&2
        exit 1
      fi
    done
    sleep 0.5
  done
  echo "$name: cluster not healthy within 60 s; log of infra1:" >&2
  tail -n 40 "$work/$name-infra1.log" >&2
  exit 1
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
