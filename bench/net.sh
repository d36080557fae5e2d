#!/usr/bin/env bash
# Network benchmark, in one run: `wrk` against the httpd unikernel (seccomp and kvm
# backends) and against Debian's nginx serving the same bytes; `redis-benchmark`
# against the kv unikernel (seccomp, kvm) and against a native redis-server. Prints
# requests/s and the ratio to native per row.
#
#   bench/net.sh [SECONDS]        (wrk duration, default 10; REQUESTS=N sets
#                                  redis-benchmark's -n, default 100000, x10 with -P 16)
#
# Needs root (network namespaces, taps). Installs wrk, redis-tools, redis-server,
# nginx-light and curl with apt when missing.
#
# Topology: the clients (wrk, redis-benchmark, curl) run in namespace "cli". The
# unikernels sit behind tap0 (host side 10.0.7.1, guest 10.0.7.2): each packet crosses
# the tap into septem-run, whose guest runs its own TCP/IP stack. The native servers
# run in a second namespace "srv" joined to "cli" by a veth pair (10.0.8.1 <-> 10.0.8.2):
# a comparable virtual link, so neither side gets loopback's shortcuts. Both native
# servers run one worker (nginx worker_processes 1; redis is single-threaded), like
# the single-threaded guests; nginx caches the open file (httpd serves from memory).
# Everything shares the same cores with the clients.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
requests="${REQUESTS:-100000}"
[[ $secs =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [SECONDS]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: needs root (network namespaces and taps)" >&2; exit 1; }

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v redis-server >/dev/null || need+=(redis-server)
command -v nginx >/dev/null || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
command -v ip >/dev/null || need+=(iproute2)
if ((${#need[@]})); then
    echo "== installing: ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

target="${CARGO_TARGET_DIR:-target}"
echo "== building (release)"
cargo build --release --quiet -p septem-monitor -p septem-build
out=target/bench
mkdir -p "$out"
"$target/release/septem-build" build examples/httpd --release -o "$out/httpd.septem" >/dev/null
"$target/release/septem-build" build examples/kv --release -o "$out/kv.septem" >/dev/null
run="$(realpath "$target/release/septem-run")"

cli="septem-bench-$$-cli"
srv="septem-bench-$$-srv"
tmp="$(mktemp -d)"
# Private copies of the images: a leftover monitor is then found by its image path.
cp "$out/httpd.septem" "$out/kv.septem" "$tmp/"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    ip netns del "$cli" 2>/dev/null || true
    ip netns del "$srv" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_cli() { ip netns exec "$cli" "$@"; }
in_srv() { ip netns exec "$srv" "$@"; }
ip netns add "$cli"
ip netns add "$srv"
in_cli ip link set lo up
in_srv ip link set lo up
in_cli ip tuntap add dev tap0 mode tap
in_cli ip addr add 10.0.7.1/24 dev tap0
in_cli ip link set tap0 up
in_cli ip link add veth0 type veth peer name veth1
in_cli ip link set veth1 netns "$srv"
in_cli ip addr add 10.0.8.1/24 dev veth0
in_srv ip addr add 10.0.8.2/24 dev veth1
in_cli ip link set veth0 up
in_srv ip link set veth1 up

backends=(seccomp)
if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    backends+=(kvm)
else
    echo "note: /dev/kvm is not usable here; kvm columns skipped"
fi

# wait_for CMD...: retries CMD (quietly) for up to 10 s.
wait_for() {
    for _ in $(seq 100); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "$0: gave up waiting for: $*" >&2
    return 1
}

# Background processes are started with `ip netns exec` itself (not through a shell
# function, which would fork a subshell): `ip` execs the program, so $! is its pid.

# start_guest BACKEND IMAGE: starts the unikernel on tap0 (pid in $guest).
start_guest() {
    ip netns exec "$cli" "$run" --backend "$1" --net:service=tap0 \
        --net-ip:service=10.0.7.2/24 --net-gw:service=10.0.7.1 "$tmp/$2" \
        >"$tmp/guest.log" 2>&1 &
    guest=$!
    pids+=("$guest")
}
# stop PID: ends it, and waits until nothing runs our images any more (the kvm
# backend's vCPU process outlives septem-run while it tears the VM down) and the tap
# is free for the next guest.
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    # A process leaves /proc's command lines before its files are closed: wait for
    # the tap's carrier to drop too (nothing attached).
    for _ in $(seq 100); do
        if ! pgrep -f "$tmp/" >/dev/null &&
            in_cli ip -o link show tap0 | grep -q NO-CARRIER; then
            return 0
        fi
        sleep 0.05
    done
    echo "$0: something still runs an image from $tmp or holds tap0" >&2
    return 1
}

declare -A rps
# wrk_rps NAME URL: runs wrk, records requests/s (and notes errors).
wrk_rps() {
    local o
    o="$(in_cli wrk -t2 -c50 -d"${secs}s" "$2")"
    rps[$1]="$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$o")"
    if grep -qE 'Socket errors|Non-2xx' <<<"$o"; then
        echo "  $1: $(grep -E 'Socket errors|Non-2xx' <<<"$o" | tr -s ' ' | paste -sd';')"
    fi
    echo "  $1: ${rps[$1]} requests/s"
}
# redis_rps PREFIX HOST: redis-benchmark SET/GET, plain and -P 16.
redis_rps() {
    local o
    o="$(in_cli redis-benchmark -h "$2" -q --csv -n "$requests" -c 50 -t set,get)"
    rps[$1-set]="$(awk -F'"' '$2=="SET" {printf "%.0f", $4}' <<<"$o")"
    rps[$1-get]="$(awk -F'"' '$2=="GET" {printf "%.0f", $4}' <<<"$o")"
    o="$(in_cli redis-benchmark -h "$2" -q --csv -n $((requests * 10)) -c 50 -P 16 -t set,get)"
    rps[$1-setP]="$(awk -F'"' '$2=="SET" {printf "%.0f", $4}' <<<"$o")"
    rps[$1-getP]="$(awk -F'"' '$2=="GET" {printf "%.0f", $4}' <<<"$o")"
    echo "  $1: SET ${rps[$1-set]}, GET ${rps[$1-get]}, -P 16: SET ${rps[$1-setP]}, GET ${rps[$1-getP]} requests/s"
}

echo "== httpd (wrk -t2 -c50 -d${secs}s)"
for b in "${backends[@]}"; do
    start_guest "$b" httpd.septem
    wait_for in_cli curl -sf --max-time 1 http://10.0.7.2/health || { cat "$tmp/guest.log" >&2; exit 1; }
    if [ ! -s "$tmp/index.html" ]; then
        in_cli curl -sf http://10.0.7.2/ -o "$tmp/index.html"
    fi
    wrk_rps "httpd-$b" http://10.0.7.2/
    stop "$guest"
done

mkdir -p "$tmp/www"
cp "$tmp/index.html" "$tmp/www/index.html"
cat >"$tmp/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $tmp/body;
    proxy_temp_path $tmp/proxy;
    fastcgi_temp_path $tmp/fastcgi;
    uwsgi_temp_path $tmp/uwsgi;
    scgi_temp_path $tmp/scgi;
    keepalive_requests 100000000;
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;
    server {
        listen 10.0.8.2:80;
        root $tmp/www;
        default_type "text/html; charset=utf-8";
    }
}
EOF
ip netns exec "$srv" nginx -t -q -c "$tmp/nginx.conf"
ip netns exec "$srv" nginx -c "$tmp/nginx.conf" -g 'daemon off;' </dev/null >/dev/null 2>&1 &
nginx_pid=$!
pids+=("$nginx_pid")
wait_for in_cli curl -sf --max-time 1 http://10.0.8.2/
cmp -s <(in_cli curl -sf http://10.0.8.2/) "$tmp/index.html" ||
    { echo "$0: nginx does not serve httpd's bytes" >&2; exit 1; }
wrk_rps native-nginx http://10.0.8.2/
stop "$nginx_pid"

echo "== kv (redis-benchmark -n $requests -c 50 -t set,get; -P 16 with -n $((requests * 10)))"
for b in "${backends[@]}"; do
    start_guest "$b" kv.septem
    wait_for in_cli redis-cli -h 10.0.7.2 ping || { cat "$tmp/guest.log" >&2; exit 1; }
    redis_rps "kv-$b" 10.0.7.2
    stop "$guest"
done
ip netns exec "$srv" redis-server --bind 10.0.8.2 --port 6379 --save '' --appendonly no \
    --protected-mode no --daemonize no --loglevel warning </dev/null >"$tmp/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
wait_for in_cli redis-cli -h 10.0.8.2 ping
redis_rps native-redis 10.0.8.2
stop "$redis_pid"

ratio() { # ratio VALUE NATIVE
    if [ -n "${1:-}" ] && [ -n "${2:-}" ] && [ "$2" -gt 0 ]; then
        awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'
    else
        printf 'n/a'
    fi
}
echo
echo "== requests/s ($(date -u +%Y-%m-%d), bench/net.sh $secs, $(nproc) cores)"
printf '%-34s %10s %10s %10s %9s %9s\n' test seccomp kvm native 'sec/nat' 'kvm/nat'
row() { # row LABEL SECCOMP KVM NATIVE
    printf '%-34s %10s %10s %10s %9s %9s\n' "$1" "${2:-n/a}" "${3:-n/a}" "$4" \
        "$(ratio "${2:-}" "$4")" "$(ratio "${3:-}" "$4")"
}
row "wrk GET / ($(wc -c <"$tmp/index.html") B) vs nginx" \
    "${rps[httpd-seccomp]:-}" "${rps[httpd-kvm]:-}" "${rps[native-nginx]}"
for t in set get setP getP; do
    case $t in
    set) label="redis-benchmark SET" ;;
    get) label="redis-benchmark GET" ;;
    setP) label="redis-benchmark SET -P 16" ;;
    getP) label="redis-benchmark GET -P 16" ;;
    esac
    row "$label vs redis" "${rps[kv-seccomp-$t]:-}" "${rps[kv-kvm-$t]:-}" "${rps[native-redis-$t]}"
done
echo "(targets: seccomp >= 0.80x native, kvm >= 0.50x)"
