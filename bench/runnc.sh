#!/usr/bin/env bash
# Container start-to-exit: `runnc run` of the `hello` example bundle (seccomp and kvm
# backends, chosen by the org.septem.runnc.backend annotation) against `runc run` of a
# static busybox `true` bundle, in one hyperfine run; medians and the runc/runnc ratio
# (issue #7's target: runnc at least 5x faster). Both bundles start from the same
# `runc spec` config (pid, network, ipc, uts and mount namespaces; terminal false), and
# every run uses a fresh container id (`$$` of the shell hyperfine starts per run;
# hyperfine subtracts that shell's spawn time). Also shown: runnc with the
# tests/guests/hello guest (no 5 ms sleep in it), and `septem-run` alone (no runtime)
# in a second hyperfine run without a shell.
#
#   bench/runnc.sh [RUNS]        (default 100 runs per command; needs root)
#   RUNNC=/path/to/runnc bench/runnc.sh   (another runnc build; septem-run next to it)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-100}"

[ "$(id -u)" = 0 ] || { echo "bench/runnc.sh needs root (runc and runnc make namespaces and cgroups)" >&2; exit 1; }
need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v runc >/dev/null || need+=(runc)
[ -x /bin/busybox ] || need+=(busybox-static)
if ((${#need[@]})); then
    echo "== installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
command -v python3 >/dev/null || { echo "python3 is needed to write configs and summarize" >&2; exit 1; }

target="${CARGO_TARGET_DIR:-target}"
echo "== building (release)"
cargo build --release --quiet -p septem-monitor -p septem-build -p runnc
bin="$(cd "$target/release" && pwd)"
runnc_bin="${RUNNC:-$bin/runnc}"
out=target/bench/runnc
mkdir -p "$out"
umount "$out/run" 2>/dev/null || true
rm -rf "$out"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

"$bin/septem-build" build examples/hello --release -o "$out/hello.septem" >/dev/null
"$bin/septem-build" build tests/guests/hello --release -o "$out/guest-hello.septem" >/dev/null

make_bundle() { # DIR ARG0 [ANNOTATION=VALUE]: runc's default config, args [ARG0]
    mkdir -p "$1/rootfs"
    (cd "$1" && runc spec)
    python3 - "$1/config.json" "$2" "${3:-}" <<'PY'
import json, sys
path, arg0, ann = sys.argv[1:4]
c = json.load(open(path))
c["process"]["args"] = [arg0]
c["process"]["terminal"] = False
if ann:
    k, v = ann.split("=", 1)
    c.setdefault("annotations", {})[k] = v
json.dump(c, open(path, "w"), indent=2)
PY
}
# Unikernel bundles: rootfs/unikernel/<app>.septem.
for b in hello-seccomp:hello:seccomp hello-kvm:hello:kvm guest-hello-seccomp:guest-hello:seccomp; do
    IFS=: read -r dir app backend <<<"$b"
    make_bundle "$out/$dir" "/unikernel/$app.septem" "org.septem.runnc.backend=$backend"
    mkdir -p "$out/$dir/rootfs/unikernel"
    cp "$out/$app.septem" "$out/$dir/rootfs/unikernel/$app.septem"
done
# The runc bundle: busybox-static as /bin/busybox, /bin/true a link to it.
make_bundle "$out/busybox" /bin/true
mkdir -p "$out/busybox/rootfs/bin"
cp /bin/busybox "$out/busybox/rootfs/bin/busybox"
ln -s busybox "$out/busybox/rootfs/bin/true"

# Both state roots on a tmpfs, as /run is on a usual host (containerd's shim passes
# /run/containerd/runc/<namespace>). Neither runtime fsyncs its state file any more
# (runnc stopped on 2026-12-06), so this only keeps the comparison as on a usual host.
mkdir -p "$out/run"
mount -t tmpfs septem-bench "$out/run"
trap 'umount "$out/run"' EXIT
root="$out/run/runnc"
runc_root="$out/run/runc"
runnc="$runnc_bin --root $root run --bundle"
runc="runc --root $runc_root run --bundle"
# Sanity: each prints/exits as expected once.
sanity=$($runnc "$out/hello-seccomp" check-$$)
grep -q "Hello, unikernel!" <<<"$sanity" || { echo "runnc run printed: $sanity" >&2; exit 1; }
$runc "$out/busybox" check-$$

cmds=("$runnc $out/hello-seccomp s\$\$" "$runc $out/busybox r\$\$")
names=("runnc run hello (seccomp)" "runc run busybox true")
refs=("$bin/septem-run --backend seccomp $out/hello.septem")
ref_names=("septem-run seccomp hello")
if [ -r /dev/kvm ] && "$bin/septem-run" --backend kvm "$out/hello.septem" >/dev/null 2>&1; then
    cmds+=("$runnc $out/hello-kvm k\$\$")
    names+=("runnc run hello (kvm)")
    refs+=("$bin/septem-run --backend kvm $out/hello.septem")
    ref_names+=("septem-run kvm hello")
else
    echo "note: KVM backend not usable here; kvm rows skipped"
fi
cmds+=("$runnc $out/guest-hello-seccomp g\$\$")
names+=("runnc run guests/hello (sec)")
refs+=("$bin/septem-run --backend seccomp $out/guest-hello.septem")
ref_names+=("septem-run guests/hello (sec)")

echo "== start-to-exit, $runs runs each (hyperfine; fresh id per run; runnc: $runnc_bin)"
args=()
for i in "${!cmds[@]}"; do args+=(-n "${names[$i]}" "${cmds[$i]}"); done
hyperfine --warmup 5 --runs "$runs" --output=null --export-json "$out/runnc.json" "${args[@]}" >/dev/null
args=()
for i in "${!refs[@]}"; do args+=(-n "${ref_names[$i]}" "${refs[$i]}"); done
hyperfine -N --warmup 5 --runs "$runs" --output=null --export-json "$out/septem-run.json" "${args[@]}" >/dev/null

python3 - "$out/runnc.json" "$out/septem-run.json" <<'PY'
import json, sys
runtimes = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
monitor = {r["command"]: r for r in json.load(open(sys.argv[2]))["results"]}
runc = runtimes["runc run busybox true"]["median"]
print(f"{'command':<30} {'median':>10} {'mean':>10} {'min':>10}  runc/this")
for name, r in list(runtimes.items()) + list(monitor.items()):
    if name in monitor and name == next(iter(monitor)):
        print("(septem-run alone, no runtime, hyperfine -N:)")
    print(f"{name:<30} {r['median']*1e3:>8.2f}ms {r['mean']*1e3:>8.2f}ms {r['min']*1e3:>8.2f}ms  {runc/r['median']:6.2f}x")
for name in ("runnc run hello (seccomp)", "runnc run hello (kvm)"):
    if name in runtimes:
        ratio = runc / runtimes[name]["median"]
        verdict = "met" if ratio >= 5 else "missed"
        print(f"{name}: {ratio:.1f}x faster than runc run busybox true (target >= 5x: {verdict})")
PY

# Every run deleted its container: nothing left in either root.
left=$(find "$root" -mindepth 1 -maxdepth 1 ! -name .runc | wc -l)
left_runc=$(find "$runc_root" -mindepth 1 -maxdepth 1 | wc -l)
echo "containers left behind: runnc $left, runc $left_runc"
