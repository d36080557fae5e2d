#!/usr/bin/env bash
# Durable kv vs in-memory kv: redis-benchmark SET against `kv` (in memory) and
# `kv-durable` (append-only log on a 64 MiB disk attached with ,sync: every group
# commit is an O_DSYNC write) per backend, with and without pipelining. Prints
# requests/s and the durable/in-memory ratio. Runs in a throwaway network namespace
# (guest 10.0.9.2, host side 10.0.9.1) it deletes on exit. Needs root and redis-tools.
#
#   [KV_IMG_DIR=DIR] bench/kv-persist.sh [REQUESTS] [CLIENTS]     (default 50000, 50;
#   the disk image goes to DIR, default target/bench: its file system decides what
#   O_DSYNC costs)
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-50000}"
c="${2:-50}"
[ "$(id -u)" = 0 ] || { echo "needs root (tap devices, network namespaces)" >&2; exit 1; }
command -v redis-benchmark >/dev/null || { echo "redis-benchmark is missing (apt-get install redis-tools)" >&2; exit 1; }

echo "== building (release)"
cargo build --release --quiet -p septem-monitor -p septem-build
out=target/bench
mkdir -p "$out"
./target/release/septem-build build examples/kv --release -o "$out/kv.septem" >/dev/null
./target/release/septem-build build examples/kv-durable --release -o "$out/kv-durable.septem" >/dev/null
run=./target/release/septem-run

ns="septem-bench-kv-$$"
img="${KV_IMG_DIR:-$out}/kv-persist.img"
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -f "$img"
}
trap cleanup EXIT
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" ip tuntap add dev tap0 mode tap
ip netns exec "$ns" ip link set tap0 up
ip netns exec "$ns" ip addr add 10.0.9.1/24 dev tap0

# bench BACKEND IMAGE [MONITOR OPTIONS…] → "SET -P1 SET -P16" rates
bench() {
    local backend=$1 image=$2
    shift 2
    ip netns exec "$ns" "$run" --backend "$backend" --net:service=tap0 \
        --net-ip:service=10.0.9.2/24 "$@" "$image" >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        ip netns exec "$ns" redis-cli -h 10.0.9.2 ping >/dev/null 2>&1 && break
        sleep 0.05
    done
    local r1 r16
    r1=$(ip netns exec "$ns" redis-benchmark -h 10.0.9.2 -q -t set -n "$n" -c "$c" | tr '\r' '\n' | awk '/requests per second/ {print $2}' | tail -1)
    r16=$(ip netns exec "$ns" redis-benchmark -h 10.0.9.2 -q -t set -n "$((n * 4))" -c "$c" -P 16 | tr '\r' '\n' | awk '/requests per second/ {print $2}' | tail -1)
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    pid=""
    echo "$r1 $r16"
}

printf '%-8s %-22s %14s %14s\n' backend variant "SET/s" "SET/s -P16"
for backend in seccomp kvm; do
    if [ "$backend" = kvm ] && ! [ -r /dev/kvm ]; then
        echo "kvm: /dev/kvm not usable, skipped"
        continue
    fi
    read -r m1 m16 < <(bench "$backend" "$out/kv.septem")
    rm -f "$img"; truncate -s 64M "$img"
    read -r d1 d16 < <(bench "$backend" "$out/kv-durable.septem" "--block:data=$img,sync")
    printf '%-8s %-22s %14s %14s\n' "$backend" "in memory" "$m1" "$m16"
    printf '%-8s %-22s %14s %14s\n' "$backend" "durable (,sync)" "$d1" "$d16"
    python3 -c "print(f'{\"$backend\":8s} {\"durable/in memory\":22s} {$d1/$m1:14.2f} {$d16/$m16:14.2f}')"
done
