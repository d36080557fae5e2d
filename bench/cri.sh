#!/usr/bin/env bash
# Pod start latency through CRI (issue #8's target: septem at least 4x faster than
# containerd + runc): RunPodSandbox -> CreateContainer -> StartContainer -> first HTTP
# 200 at the pod IP, timed by a small Rust CRI client (tests/examples/cri_bench.rs) for
#   (a) septem-cri with the httpd unikernel (seccomp, and kvm when /dev/kvm works),
#   (b) containerd's CRI with runnc as the runtime handler `septem`, same image,
#   (c) containerd's CRI with runc and a busybox httpd (`busybox httpd -f -p 80`),
# PODS pods each, one at a time (each removed before the next), the configurations
# taking turns, in one run against one loopback docker-registry, one septem-cri and one
# containerd (own root, state, socket and CNI bridge; Debian's containerd 1.6).
#
#   bench/cri.sh [PODS]        (default 20 pods per configuration; needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
pods="${1:-20}"

[ "$(id -u)" = 0 ] || { echo "bench/cri.sh needs root (netns, CNI, cgroups)" >&2; exit 1; }
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
command -v umoci >/dev/null || need+=(umoci)
command -v skopeo >/dev/null || need+=(skopeo)
command -v curl >/dev/null || need+=(curl)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
[ -x /bin/busybox ] || need+=(busybox-static)
if ((${#need[@]})); then
    echo "== installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

echo "== building (release)"
cargo build --release --quiet -p septem-monitor -p septem-build -p runnc -p septem-cri
cargo build --release --quiet -p septem-tests --example cri_bench
echo "== $pods pods per configuration (+1 warm-up each)"
cargo run --release --quiet -p septem-tests --example cri_bench -- "$pods"
