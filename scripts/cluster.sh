#!/usr/bin/env bash
# A local three-member kvserver cluster with the names and ports of etcd's own Procfile:
# infra1/infra2/infra3 serving clients on 127.0.0.1:2379/22379/32379 and peers on 127.0.0.1:2380/22380/32380.
#
#   scripts/cluster.sh start    build kvserver (release) and start the three members in the background
#   scripts/cluster.sh stop     stop them (SIGTERM, then SIGKILL after 10 s)
#   scripts/cluster.sh status   show each member's process and /health
#   scripts/cluster.sh clean    stop, then delete the cluster's data
#
# Data and logs go to $CLUSTER_DIR (default: ./cluster-data): <name>.etcd/, <name>.log, <name>.pid.
# KVSERVER_BUILD=debug uses a debug build (faster to build, slower to run).
set -euo pipefail

cd "$(dirname "$0")/.."
CLUSTER_DIR=${CLUSTER_DIR:-$PWD/cluster-data}
BUILD=${KVSERVER_BUILD:-release}
NAMES=(infra1 infra2 infra3)
CLIENT_PORTS=(2379 22379 32379)
PEER_PORTS=(2380 22380 32380)
INITIAL_CLUSTER="infra1=http://127.0.0.1:2380,infra2=http://127.0.0.1:22380,infra3=http://127.0.0.1:32380"

pid_of() {
    local file="$CLUSTER_DIR/$1.pid"
    [[ -f $file ]] && kill -0 "$(cat "$file")" 2>/dev/null && cat "$file"
}

start() {
    scripts/install-build-deps.sh
    swift build -c "$BUILD" --product kvserver
    local binary
    binary="$(swift build -c "$BUILD" --show-bin-path)/kvserver"
    mkdir -p "$CLUSTER_DIR"
    for i in 0 1 2; do
        local name=${NAMES[$i]}
        if pid=$(pid_of "$name"); then
            echo "$name is already running (pid $pid)"
            continue
        fi
        "$binary" --name "$name" --data-dir "$CLUSTER_DIR/$name.etcd" \
            --listen-client-urls "http://127.0.0.1:${CLIENT_PORTS[$i]}" \
            --advertise-client-urls "http://127.0.0.1:${CLIENT_PORTS[$i]}" \
            --listen-peer-urls "http://127.0.0.1:${PEER_PORTS[$i]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${PEER_PORTS[$i]}" \
            --initial-cluster-token etcd-cluster-1 --initial-cluster "$INITIAL_CLUSTER" \
            --initial-cluster-state new >>"$CLUSTER_DIR/$name.log" 2>&1 &
        echo $! >"$CLUSTER_DIR/$name.pid"
        echo "started $name (pid $!, client http://127.0.0.1:${CLIENT_PORTS[$i]}, log $CLUSTER_DIR/$name.log)"
    done
    # Wait (bounded) until every member reports healthy.
    for _ in $(seq 1 100); do
        if status >/dev/null 2>&1; then
            status
            echo "try: etcdctl --endpoints=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 get --prefix ''"
            return 0
        fi
        sleep 0.2
    done
    status || true
    echo "the cluster did not become healthy within 20 s; see the logs in $CLUSTER_DIR" >&2
    return 1
}

stop() {
    for name in "${NAMES[@]}"; do
        if pid=$(pid_of "$name"); then
            kill -TERM "$pid"
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
            echo "stopped $name"
        fi
        rm -f "$CLUSTER_DIR/$name.pid"
    done
}

# GET a path from a member's client port (curl when present, else bash's /dev/tcp).
http_get() {
    if command -v curl >/dev/null; then
        curl -s --max-time 2 "http://127.0.0.1:$1$2"
    else
        timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && printf 'GET $2 HTTP/1.0\r\n\r\n' >&3 && cat <&3" \
            | sed '1,/^\r$/d'
    fi
}

status() {
    local healthy=0
    for i in 0 1 2; do
        local name=${NAMES[$i]} health
        if pid=$(pid_of "$name"); then
            health=$(http_get "${CLIENT_PORTS[$i]}" /health || true)
            echo "$name: running (pid $pid) http://127.0.0.1:${CLIENT_PORTS[$i]} ${health:-no answer}"
            [[ $health == *'"health":"true"'* ]] && healthy=$((healthy + 1))
        else
            echo "$name: stopped"
        fi
    done
    [[ $healthy -eq 3 ]]
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    clean) stop; rm -rf "$CLUSTER_DIR" ;;
    *) echo "usage: $0 start|stop|status|clean" >&2; exit 2 ;;
esac
