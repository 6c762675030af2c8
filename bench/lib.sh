# Shared by the benchmark scripts (source it; it runs nothing by itself): a work directory, three-member clusters
# of etcd or kvserver on loopback, bounded stops and waits, and the leader's endpoint.
#
#   bench_init PREFIX      creates $work (kept at exit when KEEP=1) and the traps that stop every member
#   pick_port              sets REPLY to a loopback port nothing listens on, below the kernel's ephemeral range,
#                          never handed out twice (call it directly: in $(...) it could not remember the port)
#   choose_ports           fresh client and peer ports for infra1..3: sets client_ports, peer_ports,
#                          initial_cluster and ENDPOINTS
#   launch_members NAME BINARY TOKEN [FLAGS...]   starts infra1..3 (data in $work/NAME, logs $work/NAME-infraN.log)
#   wait_serving NAME [SECONDS]                   bounded wait (default 120 s) until every member is healthy
#   stop_all                                      SIGTERM, then SIGKILL after 10 s, to every member started
#   leader_endpoint                               the client endpoint of the current leader
#
# Needs ETCDCTL (a v3 etcdctl) set by the caller.

pids=()

stop_all() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    # Bounded: a member that ignores SIGTERM for 10 s is killed.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}

bench_init() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  trap 'stop_all; if [ "${KEEP:-}" = 1 ]; then echo "data and logs kept in $work"; else rm -rf "$work"; fi' EXIT
  trap 'exit 130' INT TERM
}

# Below the ephemeral range: a peer dialling a port in it before its member listens can connect to itself (TCP
# simultaneous open) and take the port, and ports the kernel picks for outgoing connections never land here.
read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range || ephemeral_low=32768
port_base=$((ephemeral_low > 12000 ? ephemeral_low - 12000 : 1024))
used_ports=" "

pick_port() {
  local port
  while :; do
    port=$((port_base + RANDOM % (ephemeral_low - port_base)))
    case "$used_ports" in *" $port "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      used_ports+="$port "
      REPLY=$port
      return
    fi
  done
}

choose_ports() {
  local i
  client_ports=() peer_ports=()
  for i in 1 2 3; do
    pick_port; client_ports[$i]=$REPLY
    pick_port; peer_ports[$i]=$REPLY
  done
  initial_cluster="infra1=http://127.0.0.1:${peer_ports[1]},infra2=http://127.0.0.1:${peer_ports[2]},infra3=http://127.0.0.1:${peer_ports[3]}"
  ENDPOINTS="127.0.0.1:${client_ports[1]},127.0.0.1:${client_ports[2]},127.0.0.1:${client_ports[3]}"
}

launch_members() {
  local name=$1 binary=$2 token=$3 i
  shift 3
  mkdir -p "$work/$name"
  for i in 1 2 3; do
    env -u ETCD_NAME -u ETCD_DATA_DIR "$binary" --name "infra$i" --data-dir "$work/$name/infra$i.etcd" \
      --listen-client-urls "http://127.0.0.1:${client_ports[$i]}" --advertise-client-urls "http://127.0.0.1:${client_ports[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${peer_ports[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${peer_ports[$i]}" \
      --initial-cluster "$initial_cluster" --initial-cluster-token "$token" --initial-cluster-state new "$@" \
      >>"$work/$name-infra$i.log" 2>&1 &
    pids+=($!)
  done
}

wait_serving() {
  local name=$1 seconds=${2:-120} i
  for _ in $(seq $((seconds * 10))); do
    if "$ETCDCTL" --endpoints="$ENDPOINTS" endpoint health --command-timeout=2s >/dev/null 2>&1; then return 0; fi
    for i in 1 2 3; do
      if ! kill -0 "${pids[$((${#pids[@]} - 4 + i))]}" 2>/dev/null; then
        echo "$name: member infra$i exited; its log:" >&2
        tail -n 40 "$work/$name-infra$i.log" >&2
        exit 1
      fi
    done
    sleep 0.1
  done
  echo "$name: cluster not serving within $seconds s; log of infra1:" >&2
  tail -n 40 "$work/$name-infra1.log" >&2
  exit 1
}

# Writes go to the leader, as in etcd's own performance figures (followers would forward).
leader_endpoint() {
  "$ETCDCTL" --endpoints="$ENDPOINTS" endpoint status -w json | /usr/bin/python3 -c '
import json, sys
for status in json.load(sys.stdin):
    if status["Status"]["header"]["member_id"] == status["Status"]["leader"]:
        print(status["Endpoint"]); break'
}
