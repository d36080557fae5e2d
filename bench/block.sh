#!/usr/bin/env bash
# Block I/O throughput: the `block_bench` guest (septem_libos::block: sequential
# write/read in 1 MiB requests, random 4 KiB reads/writes) per backend, against the
# host doing the same on the same file: dd (sequential, bs=1M) and fio (random 4 KiB,
# psync engine, one job, page cache kept: --invalidate=0). Prints MB/s (and IOPS for random I/O) and guest/host ratios.
# Nothing here fsyncs: the guest's BlockFlush is an ordering point only (docs/storage.md),
# and dd/fio are run without sync options, so all sides measure the page cache.
#
#   bench/block.sh [SEQ_MIB] [RAND_OPS]     (default 256 MiB, 20000 random ops)
set -euo pipefail
cd "$(dirname "$0")/.."
mib="${1:-256}"
ops="${2:-20000}"

if ! command -v fio >/dev/null; then
    echo "== installing fio"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio
fi
command -v python3 >/dev/null || { echo "python3 is needed to summarize" >&2; exit 1; }

echo "== building (release)"
cargo build --release --quiet -p septem-monitor -p septem-build
out=target/bench
mkdir -p "$out"
./target/release/septem-build build tests/guests/block_bench --release -o "$out/block_bench.septem" >/dev/null
img="$out/block-bench.img"
rm -f "$img"
trap 'rm -f "$img"' EXIT
# Allocate the file up front (untimed): every run below then overwrites allocated
# blocks, so nobody pays for block allocation and the first writer is not penalized.
dd if=/dev/zero of="$img" bs=1M count="$((mib + 1))" status=none
run=./target/release/septem-run

backends=(seccomp)
if [ -r /dev/kvm ] && $run --backend kvm --block:disk="$img" "$out/block_bench.septem" -- 1 10 >/dev/null 2>&1; then
    backends+=(kvm)
else
    echo "note: KVM backend not usable here; kvm column skipped"
fi

results="$out/block.txt"
: >"$results"

echo "== host: dd (1 MiB blocks) and fio (4 KiB random, psync), $mib MiB, $ops random ops"
# dd prints "N bytes (...) copied, S s, R MB/s"; keep bytes and seconds.
dd_rate() { awk '/copied/ { for (i = 1; i <= NF; i++) if ($i == "s,") s = $(i-1); print $1, s }'; }
read -r b t < <(dd if=/dev/zero of="$img" bs=1M count="$mib" conv=notrunc 2>&1 | dd_rate)
echo "host seq_write $b $t" >>"$results"
read -r b t < <(dd if="$img" of=/dev/null bs=1M count="$mib" 2>&1 | dd_rate)
echo "host seq_read $b $t" >>"$results"
for rw in randread randwrite; do
    fio --name=bench --filename="$img" --rw="$rw" --bs=4k --size="${mib}M" \
        --io_size="$((ops * 4))k" --ioengine=psync --direct=0 --numjobs=1 \
        --invalidate=0 --randrepeat=0 --output-format=json >"$out/fio-$rw.json" 2>/dev/null
    python3 - "$out/fio-$rw.json" "$rw" >>"$results" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
side = "read" if sys.argv[2] == "randread" else "write"
name = "rand_read_4k" if side == "read" else "rand_write_4k"
r = job[side]
# bw_bytes is bytes/s (runtime is whole milliseconds: too coarse here).
print(f"host {name} {r['io_bytes']} {r['io_bytes'] / r['bw_bytes']}")
PY
done

for be in "${backends[@]}"; do
    echo "== guest: block_bench on the $be backend"
    $run --backend "$be" --block:disk="$img" "$out/block_bench.septem" -- "$mib" "$ops" |
        awk -v be="$be" '/^block_bench / { print be, $2, $3, $4 / 1e9 }' >>"$results"
done

python3 - "$results" "$ops" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    who, test, nbytes, secs = line.split()
    rows.setdefault(test, {})[who] = (int(nbytes), float(secs))
who = ["host"] + [w for w in ("seccomp", "kvm") if any(w in r for r in rows.values())]
print()
print(f"{'test':<15}" + "".join(f"{w + ' MB/s':>16}" for w in who) +
      "".join(f"{w + '/host':>14}" for w in who[1:]))
for test in ("seq_write", "seq_read", "rand_read_4k", "rand_write_4k"):
    r = rows.get(test, {})
    rate = {w: r[w][0] / r[w][1] / 1e6 for w in who if w in r and r[w][1] > 0}
    line = f"{test:<15}" + "".join(f"{rate.get(w, float('nan')):>16.1f}" for w in who)
    line += "".join(f"{rate.get(w, float('nan')) / rate['host']:>13.2f}x" for w in who[1:])
    if test.startswith("rand"):
        iops = {w: r[w][0] / 4096 / r[w][1] for w in who if w in r and r[w][1] > 0}
        line += "   IOPS " + " / ".join(f"{w} {iops[w]:.0f}" for w in who if w in iops)
    print(line)
PY
