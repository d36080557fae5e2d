#!/usr/bin/env bash
# OCI benchmark: `septem-build package`, push and pull times for examples/hello against
# `skopeo copy` of the same layout to/from the same registry (Debian's docker-registry
# started here on a loopback port, filesystem storage in a temporary directory), then
# image sizes of the examples next to published sizes of common base images.
#
#   bench/oci.sh [RUNS]        (default 20 runs per measurement; medians are printed)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"

need=()
command -v skopeo >/dev/null || need+=(skopeo)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
if ((${#need[@]})); then
    echo "== installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
command -v python3 >/dev/null || { echo "python3 is needed to summarize" >&2; exit 1; }

echo "== building (release)"
cargo build --release --quiet -p septem-build
sb="${CARGO_TARGET_DIR:-target}/release/septem-build"
out=target/bench/oci
rm -rf "$out"
mkdir -p "$out"
examples=()
for ex in hello httpd kv; do
    [ -f "examples/$ex/Cargo.toml" ] || continue
    if $sb build "examples/$ex" --release -o "$out/$ex.septem" >/dev/null 2>"$out/$ex.build.log"; then
        examples+=("$ex")
    else
        echo "note: examples/$ex does not build right now; skipped (see $out/$ex.build.log)"
    fi
done

tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$tmp/config.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $tmp/storage
http:
  addr: 127.0.0.1:$port
YML
/usr/bin/docker-registry serve "$tmp/config.yml" >"$tmp/registry.log" 2>&1 &
reg_pid=$!
trap 'kill $reg_pid 2>/dev/null; wait $reg_pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
python3 - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(200):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v2/", timeout=1)
        sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit("docker-registry did not answer GET /v2/")
PY
reg=127.0.0.1:$port

# time_us CMD...: runs CMD once, prints wall microseconds.
time_us() {
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000))
}

img="$out/hello.septem"
layout="$out/hello.oci"
$sb package "$img" --tag hello:bench --out "$layout" >/dev/null
: >"$out/times"
echo "== timing, $runs runs each (fresh repository per push so every blob is uploaded)"
for i in $(seq "$runs"); do
    echo "package $(time_us $sb package "$img" --tag hello:bench --out "$tmp/p$i.oci")" >>"$out/times"
    echo "push-septem $(time_us $sb push -q "$layout" "$reg/ours/hello$i:bench")" >>"$out/times"
    echo "push-skopeo $(time_us skopeo copy -q --dest-tls-verify=false "oci:$layout:bench" "docker://$reg/skopeo/hello$i:bench")" >>"$out/times"
    echo "pull-septem $(time_us $sb pull -q "$reg/ours/hello$i:bench" --out "$tmp/pulled$i.oci")" >>"$out/times"
    echo "pull-skopeo $(time_us skopeo copy -q --src-tls-verify=false "docker://$reg/ours/hello$i:bench" "oci:$tmp/skopeo$i.oci:bench")" >>"$out/times"
done

# Sizes: the .septem, the gzip layer, the uncompressed layer, the whole image (all blobs).
: >"$out/sizes"
for ex in "${examples[@]}"; do
    $sb package "$out/$ex.septem" --tag "$ex:bench" --out "$out/$ex.oci" --json >"$out/$ex.json"
    total=$(du -cb "$out/$ex.oci"/blobs/sha256/* | tail -1 | cut -f1)
    python3 - "$out/$ex.json" "$ex" "$(stat -c %s "$out/$ex.septem")" "$total" >>"$out/sizes" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
print(sys.argv[2], sys.argv[3], p["layer_size"], p["layer_uncompressed_size"], sys.argv[4])
PY
done

python3 - "$out/times" "$out/sizes" "$runs" <<'PY'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    times.setdefault(k, []).append(int(v) / 1000)
def med(k):
    return statistics.median(times[k])
print(f"\nhello, {sys.argv[3]} runs, median wall time (ms), loopback docker-registry:")
print(f"{'operation':<10} {'septem-build':>13} {'skopeo copy':>12}")
print(f"{'package':<10} {med('package'):>11.1f}ms {'-':>12}")
print(f"{'push':<10} {med('push-septem'):>11.1f}ms {med('push-skopeo'):>10.1f}ms")
print(f"{'pull':<10} {med('pull-septem'):>11.1f}ms {med('pull-skopeo'):>10.1f}ms")
print("\nimage sizes (measured here):")
print(f"{'image':<22} {'.septem':>10} {'layer gz':>10} {'layer tar':>10} {'all blobs':>10}")
def kb(n): return f"{int(n)/1024:.1f} KiB"
for line in open(sys.argv[2]):
    name, septem, gz, tar, total = line.split()
    print(f"{'septem ' + name:<22} {kb(septem):>10} {kb(gz):>10} {kb(tar):>10} {kb(total):>10}")
print("\nreference base images (published figures, not measured here):")
print(f"{'alpine:3.20 amd64':<22} {'-':>10} {'~3.5 MB':>10} {'7.8 MB':>10}")
print(f"{'distroless/static':<22} {'-':>10} {'~2 MB':>10} {'-':>10}")
PY
