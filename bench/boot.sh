#!/usr/bin/env bash
# Boot-to-exit benchmark: `hello` under septem-run (seccomp and kvm backends) side by
# side with /bin/true and a static C hello, in one run; medians and ratios to
# /bin/true. Then the hypercall round-trip cost per backend (a guest timing N calls).
#
#   bench/boot.sh [RUNS]        (default 200 runs per command)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-200}"

if ! command -v hyperfine >/dev/null; then
    echo "== installing hyperfine"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine
fi
command -v python3 >/dev/null || { echo "python3 is needed to summarize" >&2; exit 1; }

echo "== building (release)"
cargo build --release --quiet -p septem-monitor -p septem-build
out=target/bench
mkdir -p "$out"
./target/release/septem-build build tests/guests/hello --release -o "$out/hello.septem" >/dev/null
./target/release/septem-build build examples/hello --release -o "$out/example-hello.septem" >/dev/null
./target/release/septem-build build tests/guests/hypercall_bench --release -o "$out/hypercall_bench.septem" >/dev/null
printf '#include <stdio.h>\nint main(void){puts("Hello from C");return 0;}\n' >"$out/hello.c"
gcc -O2 -static -o "$out/c-hello" "$out/hello.c"

run=./target/release/septem-run
cmds=(/bin/true "$out/c-hello" "$run --backend seccomp $out/hello.septem")
names=("/bin/true" "static C hello" "septem-run seccomp hello")
if [ -r /dev/kvm ] && $run --backend kvm "$out/hello.septem" >/dev/null 2>&1; then
    cmds+=("$run --backend kvm $out/hello.septem")
    names+=("septem-run kvm hello")
else
    echo "note: KVM backend not usable here; kvm rows skipped"
fi

echo "== boot-to-exit, $runs runs each (hyperfine, -N: no shell)"
args=()
for i in "${!cmds[@]}"; do args+=(-n "${names[$i]}" "${cmds[$i]}"); done
hyperfine -N --warmup 10 --runs "$runs" --output=null --export-json "$out/boot.json" "${args[@]}" >/dev/null

python3 - "$out/boot.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))["results"]
base = res[0]["median"]
print(f"{'command':<28} {'median':>10} {'mean':>10} {'min':>10}  ratio to /bin/true")
for r in res:
    print(f"{r['command']:<28} {r['median']*1e3:>8.3f}ms {r['mean']*1e3:>8.3f}ms {r['min']*1e3:>8.3f}ms  {r['median']/base:6.2f}x")
PY

echo "== hypercall round trip (ClockMonotonic, 20000 calls, guest-timed)"
for b in seccomp kvm; do
    if [ "$b" = kvm ] && [ "${#cmds[@]}" -lt 4 ]; then continue; fi
    printf '%-8s ' "$b"
    $run --backend "$b" "$out/hypercall_bench.septem" -- 20000 | grep hypercall_bench
done
