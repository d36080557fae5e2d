#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need, checks formatting
# and lints, then runs every test. Tests that need /dev/kvm skip with a printed reason
# where it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v gcc >/dev/null || need_apt+=(gcc)
command -v ld >/dev/null || need_apt+=(binutils)
command -v objdump >/dev/null || need_apt+=(binutils)
command -v skopeo >/dev/null || need_apt+=(skopeo)
command -v umoci >/dev/null || need_apt+=(umoci)
command -v containerd >/dev/null || need_apt+=(containerd)
command -v busybox >/dev/null || need_apt+=(busybox-static)
[ -x /usr/bin/docker-registry ] || need_apt+=(docker-registry)
# htpasswd for the registry with auth of tests/tests/cri_api.rs.
command -v htpasswd >/dev/null || need_apt+=(apache2-utils)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
# Network end-to-end tests (tests/tests/servers.rs): clients run in a test netns.
command -v ip >/dev/null || need_apt+=(iproute2)
command -v curl >/dev/null || need_apt+=(curl)
command -v ping >/dev/null || need_apt+=(iputils-ping)
[ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
{ command -v redis-cli && command -v redis-benchmark; } >/dev/null || need_apt+=(redis-tools)
if ((${#need_apt[@]})); then
    echo "== installing: ${need_apt[*]}"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    fi
fi
rustup component add clippy rustfmt >/dev/null 2>&1 || true
rustup target add x86_64-unknown-linux-gnu >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all --check
for guest in examples/*/Cargo.toml tests/guests/*/Cargo.toml; do
    cargo fmt --manifest-path "$guest" --check
done
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
# PROPTEST_CASES bounds the property tests' time in CI.
PROPTEST_CASES="${PROPTEST_CASES:-2000}" cargo test --workspace --no-fail-fast "$@"
echo "== example apps: protocol logic (host-testable libs)"
for app in httpd kv; do
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/examples-host" \
        cargo test --manifest-path "examples/$app/Cargo.toml" --lib
done
