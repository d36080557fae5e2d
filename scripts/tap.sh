#!/usr/bin/env bash
# Creates or removes a tap interface for septem-run's net devices.
#
#   scripts/tap.sh up TAP [HOST_ADDR/PREFIX]   create TAP (if needed), bring it up, and
#                                              give the host side HOST_ADDR/PREFIX
#   scripts/tap.sh down TAP                    remove TAP (if it exists)
#
# Idempotent: running `up` twice, or `down` on a missing tap, is fine. Needs root (or
# CAP_NET_ADMIN). Run through sudo, the tap is created for $SUDO_USER, who can then
# attach septem-run to it without root (given access to /dev/net/tun).
# Example:  sudo scripts/tap.sh up tap0 10.0.7.1/24
#           septem-run --net:service=tap0 --net-ip:service=10.0.7.2/24 \
#                      --net-gw:service=10.0.7.1 app.septem
# See docs/networking.md.
set -euo pipefail

prog=${0##*/}
die() {
    echo "$prog: $*" >&2
    exit 1
}
usage() {
    echo "usage: $prog up TAP [HOST_ADDR/PREFIX] | $prog down TAP" >&2
    exit 2
}

[ $# -ge 2 ] && [ $# -le 3 ] || usage
action=$1
tap=$2
addr=${3-}
case $action in up | down) ;; *) usage ;; esac
[ "$action" = up ] || [ -z "$addr" ] || usage

[[ $tap =~ ^[A-Za-z0-9_.-]{1,15}$ ]] ||
    die "'$tap' is not an interface name (1 to 15 characters of A-Z a-z 0-9 _ . -)"
if [ -n "$addr" ]; then
    [[ $addr =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$ ]] ||
        die "'$addr' is not ADDR/PREFIX (e.g. 10.0.7.1/24)"
fi
command -v ip >/dev/null || die "the 'ip' tool is missing (install iproute2)"
[ "$(id -u)" = 0 ] || die "must run as root to create or remove a tap (it needs CAP_NET_ADMIN): sudo $0 $*"

exists() { ip link show dev "$tap" >/dev/null 2>&1; }
is_tap() { ip -d link show dev "$tap" 2>/dev/null | grep -q 'tun type tap'; }

case $action in
up)
    if exists; then
        is_tap || die "'$tap' exists but is not a tap device; pick another name"
    else
        owner=()
        if [ -n "${SUDO_USER-}" ] && [ "$SUDO_USER" != root ]; then
            owner=(user "$SUDO_USER")
        fi
        ip tuntap add dev "$tap" mode tap "${owner[@]}"
        echo "$prog: created tap $tap${owner[*]:+ for ${owner[1]}}"
    fi
    ip link set dev "$tap" up
    if [ -n "$addr" ]; then
        if ip -4 -o addr show dev "$tap" | grep -qw "inet $addr"; then
            :
        else
            ip addr add "$addr" dev "$tap" || die "cannot give $tap the address $addr"
        fi
    fi
    echo "$prog: $tap is up${addr:+, host address $addr}"
    ;;
down)
    if ! exists; then
        echo "$prog: $tap does not exist; nothing to do"
        exit 0
    fi
    is_tap || die "'$tap' is not a tap device; not removing it"
    ip tuntap del dev "$tap" mode tap
    echo "$prog: removed $tap"
    ;;
esac
