#!/usr/bin/env bash
# Network wiring cost of `runnc create` + `runnc delete --force` for a networked
# unikernel bundle (examples/httpd, seccomp backend) whose config names a network
# namespace by path — a veth pair with eth0 addressed and a default route, what CNI
# hands over. Compares an old runnc (built from git revision OLD, default `main`) with
# the working tree's, in one run: the two alternate run by run (old, new, old, …) so
# load on a shared machine hits both alike. Prints medians of create, delete and
# create+delete, the old/new ratio, and the load average before and after.
#
#   bench/runnc-net.sh [RUNS]          (default 30 runs of each; needs root)
#   OLD=<rev> bench/runnc-net.sh       (compare against another revision)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-30}"
old_rev="${OLD:-main}"

[ "$(id -u)" = 0 ] || { echo "bench/runnc-net.sh needs root (namespaces, taps, cgroups)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is needed to write the config and time runs" >&2; exit 1; }

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"
out="$target/bench/runnc-net"
ns="runnc-bench-$$"
host_if="rbn$$"
src=""
cleanup() {
    for id in $(ls "$out/root" 2>/dev/null); do
        "$out/runnc-new" --root "$out/root" delete --force "$id" >/dev/null 2>&1 || true
    done
    ip netns del "$ns" 2>/dev/null || true
    ip link del "$host_if" 2>/dev/null || true
    [ -n "$src" ] && rm -rf "$src"
    rm -rf "$out/bundle" "$out/root"
}
trap cleanup EXIT
rm -rf "$out"
mkdir -p "$out"

echo "== building runnc at $old_rev (old)"
# A fixed path (and git archive's fixed mtimes): a second run reuses the build.
src="$target/bench/runnc-net-old-src"
rm -rf "$src"
mkdir -p "$src"
git archive "$old_rev" | tar -x -C "$src"
cargo build --release --quiet --manifest-path "$src/Cargo.toml" -p runnc
cp "$target/release/runnc" "$out/runnc-old"
rm -rf "$src"
src=""
echo "== building runnc, septem-run, septem-build from the working tree (new)"
cargo build --release --quiet -p runnc -p septem-monitor -p septem-build
cp "$target/release/runnc" "$out/runnc-new"
if cmp -s "$out/runnc-old" "$out/runnc-new"; then
    echo "runnc at $old_rev and the working tree's are the same binary" >&2
    exit 1
fi
cp "$target/release/septem-run" "$out/septem-run" # next to both runnc binaries
"$target/release/septem-build" build --release examples/httpd -o "$out/httpd.septem" >/dev/null

echo "== namespace $ns: eth0 (veth to $host_if) 10.79.0.2/24, default via 10.79.0.1"
ip netns add "$ns"
ip -n "$ns" link set lo up
ip link add "$host_if" type veth peer name eth0 netns "$ns"
ip link set "$host_if" up
ip addr add 10.79.0.1/24 dev "$host_if"
ip -n "$ns" addr add 10.79.0.2/24 dev eth0
ip -n "$ns" link set eth0 up
ip -n "$ns" route add default via 10.79.0.1

bundle="$out/bundle"
mkdir -p "$bundle"
"$out/runnc-new" spec --bundle "$bundle" >/dev/null
mkdir -p "$bundle/rootfs/unikernel"
cp "$out/httpd.septem" "$bundle/rootfs/unikernel/app.septem"
python3 - "$bundle/config.json" "/var/run/netns/$ns" <<'PY'
import json, sys
path, netns = sys.argv[1:3]
c = json.load(open(path))
c["process"]["args"] = ["/unikernel/app.septem"]
c["process"]["terminal"] = False
c.setdefault("annotations", {}).update({
    "org.septem.unikernel": "true",
    "org.septem.runnc.backend": "seccomp",
})
spaces = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
c["linux"]["namespaces"] = spaces + [{"type": "network", "path": netns}]
json.dump(c, open(path, "w"), indent=2)
PY

echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
python3 - "$out" "$bundle" "$runs" <<'PY'
import os, statistics, subprocess, sys, time
out, bundle, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
root = os.path.join(out, "root")
times = {"old": {"create": [], "delete": [], "both": []},
         "new": {"create": [], "delete": [], "both": []}}

# Output to a file, not a pipe: the container process `create` leaves behind inherits
# it, and a pipe would not see EOF until that process is gone.
log = open(os.path.join(out, "runnc.log"), "ab")

def runnc(which, *args):
    t = time.perf_counter()
    subprocess.run([os.path.join(out, "runnc-" + which), "--root", root, *args],
                   check=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    return (time.perf_counter() - t) * 1000

# One warm-up pair (page cache, first cgroup), not counted.
for which in ("old", "new"):
    runnc(which, "create", "--bundle", bundle, "warm-" + which)
    runnc(which, "delete", "--force", "warm-" + which)
for i in range(runs):
    for which in (("old", "new") if i % 2 == 0 else ("new", "old")):
        cid = f"b{i}-{which}"
        c = runnc(which, "create", "--bundle", bundle, cid)
        d = runnc(which, "delete", "--force", cid)
        t = times[which]
        t["create"].append(c); t["delete"].append(d); t["both"].append(c + d)

med = {w: {k: statistics.median(v) for k, v in t.items()} for w, t in times.items()}
print(f"{runs} runs each, alternating; medians in ms")
print(f"{'':8}{'create':>10}{'delete':>10}{'create+delete':>16}")
for w in ("old", "new"):
    m = med[w]
    print(f"{w:8}{m['create']:10.1f}{m['delete']:10.1f}{m['both']:16.1f}")
r = {k: med["old"][k] / med["new"][k] for k in ("create", "delete", "both")}
print(f"{'old/new':8}{r['create']:9.2f}x{r['delete']:9.2f}x{r['both']:15.2f}x")
PY
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
