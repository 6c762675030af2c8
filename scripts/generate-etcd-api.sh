#!/usr/bin/env bash
# generate-etcd-api.sh — regenerate Sources/EtcdAPI (Swift code for etcd's v3 gRPC API).
#
# Usage (from anywhere inside the repository):
#   scripts/generate-etcd-api.sh                  regenerate Sources/EtcdAPI from Protos/etcd
#   scripts/generate-etcd-api.sh --update-protos  first re-extract etcd's protos at $ETCD_REF from
#                                                 $ETCD_REPO, strip them (scripts/strip-etcd-protos.py)
#                                                 into Protos/etcd, then regenerate
#
# What it does:
#   1. Uses `protoc` from PATH ($PROTOC overrides); installs Debian's protobuf-compiler with apt-get
#      when it is missing and we are root. The committed code was made with libprotoc 3.21.12.
#   2. Builds protoc-gen-swift and protoc-gen-grpc-swift-2 from grpc-swift-protobuf $GRPC_SWIFT_PROTOBUF_VERSION
#      in a scratch directory OUTSIDE the repository ($TOOLS_DIR), pinning its dependencies to the
#      grpc-swift-2 and swift-protobuf versions in Package.swift, unless they are already built there.
#   3. Runs protoc on the committed, already stripped protos in Protos/etcd (include root: Protos, since
#      rpc.proto imports "etcd/api/mvccpb/kv.proto" and "etcd/api/authpb/auth.proto"), writing into a
#      temp dir, then replaces the generated files in Sources/EtcdAPI (*.pb.swift, *.grpc.swift).
#
# The output is deterministic: running the script twice leaves `git status` clean.
#
# Environment:
#   TOOLS_DIR        scratch dir for tool builds (default: ${XDG_CACHE_HOME:-$HOME/.cache}/raftkv-etcd-api-tools)
#   GRPC_SWIFT_PROTOBUF_DIR
#                    grpc-swift-protobuf checkout to build the plugins in
#                    (default: $TOOLS_DIR/grpc-swift-protobuf-$GRPC_SWIFT_PROTOBUF_VERSION)
#   PROTOC           protoc binary (default: protoc)
#   ETCD_REPO        for --update-protos: etcd git repository — a URL, a clone or a bare git dir
#                    (default: https://github.com/etcd-io/etcd)
#   ETCD_REF         for --update-protos: tag or commit to take the protos from (default: v3.5.33)
set -euo pipefail

# Keep these in step with Package.swift.
GRPC_SWIFT_PROTOBUF_VERSION=2.4.1
GRPC_SWIFT_VERSION=2.4.3
SWIFT_PROTOBUF_VERSION=1.39.0

ETCD_REPO=${ETCD_REPO:-https://github.com/etcd-io/etcd}
ETCD_REF=${ETCD_REF:-v3.5.33}
PROTOC=${PROTOC:-protoc}
TOOLS_DIR=${TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/raftkv-etcd-api-tools}
GRPC_SWIFT_PROTOBUF_DIR=${GRPC_SWIFT_PROTOBUF_DIR:-$TOOLS_DIR/grpc-swift-protobuf-$GRPC_SWIFT_PROTOBUF_VERSION}

# etcd proto paths, relative to etcd's repository root (3.5 layout) and to Protos/etcd.
PROTOS=(api/etcdserverpb/rpc.proto api/mvccpb/kv.proto api/authpb/auth.proto)

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROTO_ROOT=$REPO_ROOT/Protos
OUT_DIR=$REPO_ROOT/Sources/EtcdAPI

log() { echo "generate-etcd-api: $*" >&2; }
die() { log "error: $*"; exit 1; }

update_protos=false
case "${1:-}" in
  "") ;;
  --update-protos) update_protos=true ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (try --help)" ;;
esac

SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

outside_repo() {
  local dir
  dir=$(mkdir -p "$1" && cd "$1" && pwd)
  case "$dir/" in "$REPO_ROOT"/*) die "$1 is inside the repository; use a directory outside it" ;; esac
}

# ---- 1. protoc -------------------------------------------------------------------------------
if ! command -v "$PROTOC" >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing protobuf-compiler"
    apt-get update -q && apt-get install -y -q protobuf-compiler
  else
    die "protoc not found; install protobuf-compiler (Debian/Ubuntu) or set PROTOC"
  fi
fi
log "using $("$PROTOC" --version)"

# ---- 2. plugins ------------------------------------------------------------------------------
plugin_bin=$GRPC_SWIFT_PROTOBUF_DIR/.build/release
outside_repo "$TOOLS_DIR"
outside_repo "$(dirname "$GRPC_SWIFT_PROTOBUF_DIR")"

# Prints "identity version" for each pin of the checkout's Package.resolved.
resolved_pins() {
  python3 - "$GRPC_SWIFT_PROTOBUF_DIR/Package.resolved" <<'PY'
import json, sys
try:
    pins = json.load(open(sys.argv[1]))["pins"]
except OSError:
    pins = []
for pin in pins:
    print(pin["identity"], pin["state"].get("version", pin["state"].get("revision")))
PY
}

plugins_current() {
  [ -x "$plugin_bin/protoc-gen-swift" ] && [ -x "$plugin_bin/protoc-gen-grpc-swift-2" ] || return 1
  [ "$(git -C "$GRPC_SWIFT_PROTOBUF_DIR" rev-parse HEAD)" = \
    "$(git -C "$GRPC_SWIFT_PROTOBUF_DIR" rev-parse "$GRPC_SWIFT_PROTOBUF_VERSION^{commit}")" ] || return 1
  local pins
  pins=$(resolved_pins)
  grep -qx "grpc-swift-2 $GRPC_SWIFT_VERSION" <<<"$pins" && grep -qx "swift-protobuf $SWIFT_PROTOBUF_VERSION" <<<"$pins"
}

if ! plugins_current; then
  if [ ! -d "$GRPC_SWIFT_PROTOBUF_DIR/.git" ]; then
    log "cloning grpc-swift-protobuf into $GRPC_SWIFT_PROTOBUF_DIR"
    git clone -q https://github.com/grpc/grpc-swift-protobuf "$GRPC_SWIFT_PROTOBUF_DIR"
  fi
  git -C "$GRPC_SWIFT_PROTOBUF_DIR" -c advice.detachedHead=false checkout -q "$GRPC_SWIFT_PROTOBUF_VERSION"
  log "building protoc plugins (grpc-swift-protobuf $GRPC_SWIFT_PROTOBUF_VERSION, grpc-swift-2 $GRPC_SWIFT_VERSION, swift-protobuf $SWIFT_PROTOBUF_VERSION)"
  (
    cd "$GRPC_SWIFT_PROTOBUF_DIR"
    swift package resolve
    swift package resolve grpc-swift-2 --version "$GRPC_SWIFT_VERSION"
    swift package resolve swift-protobuf --version "$SWIFT_PROTOBUF_VERSION"
    swift build -c release --product protoc-gen-grpc-swift-2
    swift build -c release --product protoc-gen-swift
  )
  plugins_current || die "plugin build did not produce the pinned versions; see $GRPC_SWIFT_PROTOBUF_DIR"
fi

# ---- optional: refresh Protos/etcd from upstream -------------------------------------------
if $update_protos; then
  if git -C "$ETCD_REPO" rev-parse --git-dir >/dev/null 2>&1; then
    etcd_git=$(cd "$ETCD_REPO" && cd "$(git rev-parse --git-dir)" && pwd)
  else
    etcd_git=$TOOLS_DIR/etcd.git
    if [ ! -d "$etcd_git" ]; then
      log "cloning $ETCD_REPO (bare, blobs on demand) into $etcd_git"
      git clone -q --bare --filter=blob:none "$ETCD_REPO" "$etcd_git"
    fi
    git --git-dir="$etcd_git" fetch -q --tags origin
  fi
  commit=$(git --git-dir="$etcd_git" rev-parse "$ETCD_REF^{commit}") || die "$ETCD_REF not found in $ETCD_REPO"
  log "stripping etcd protos from $ETCD_REF ($commit)"
  for p in "${PROTOS[@]}"; do
    mkdir -p "$SCRATCH/upstream/$(dirname "$p")" "$SCRATCH/stripped/etcd/$(dirname "$p")"
    git --git-dir="$etcd_git" show "$commit:$p" >"$SCRATCH/upstream/$p"
    python3 "$REPO_ROOT/scripts/strip-etcd-protos.py" "$SCRATCH/upstream/$p" "$SCRATCH/stripped/etcd/$p"
  done
  git --git-dir="$etcd_git" show "$commit:LICENSE" >"$SCRATCH/stripped/etcd/LICENSE"
  printf 'etcd %s (commit %s)\n' "$ETCD_REF" "$commit" >"$SCRATCH/stripped/etcd/VERSION"
  rm -rf "$PROTO_ROOT/etcd/api"
  mkdir -p "$PROTO_ROOT/etcd"
  cp -R "$SCRATCH/stripped/etcd/." "$PROTO_ROOT/etcd/"
fi

# ---- 3. generate -----------------------------------------------------------------------------
for p in "${PROTOS[@]}"; do
  [ -f "$PROTO_ROOT/etcd/$p" ] || die "missing $PROTO_ROOT/etcd/$p (run with --update-protos)"
done

mkdir -p "$SCRATCH/gen"
(
  cd "$PROTO_ROOT"
  # Messages for all three files (rpc.pb.swift, kv.pb.swift, auth.pb.swift).
  "$PROTOC" -I . \
    --plugin=protoc-gen-swift="$plugin_bin/protoc-gen-swift" \
    --swift_out="$SCRATCH/gen" \
    --swift_opt=Visibility=Public,FileNaming=DropPath \
    "${PROTOS[@]/#/etcd/}"
  # Services live only in rpc.proto (rpc.grpc.swift); the others would give empty files.
  "$PROTOC" -I . \
    --plugin=protoc-gen-grpc-swift-2="$plugin_bin/protoc-gen-grpc-swift-2" \
    --grpc-swift-2_out="$SCRATCH/gen" \
    --grpc-swift-2_opt=Visibility=Public,FileNaming=DropPath,Server=true,Client=true \
    etcd/api/etcdserverpb/rpc.proto
)

mkdir -p "$OUT_DIR"
find "$OUT_DIR" -maxdepth 1 -type f \( -name '*.pb.swift' -o -name '*.grpc.swift' \) -delete
cp "$SCRATCH"/gen/*.swift "$OUT_DIR/"
log "wrote $(cd "$SCRATCH/gen" && ls *.swift | tr '\n' ' ')to ${OUT_DIR#"$REPO_ROOT"/}"
