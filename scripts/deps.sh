#!/bin/sh
# Installs the Debian packages the tests, the demo and the benchmarks use,
# skipping everything already present (so repeated runs cost nothing).
# `deps.sh --image` also installs podman and runc, for `make image-test`
# (CI does; elsewhere that test says SKIPPED without them). Debian's podman
# package drops /etc/cni/net.d/87-podman-bridge.conflist: no test reads
# that directory, and the image test runs its containers without a network.
set -eu
want="iproute2 nftables containernetworking-plugins conntrack dnsmasq-base busybox-static qemu-system-x86 linux-image-amd64 cpio kmod iptables firewalld dbus-daemon dbus-bin python3-yaml iputils-ping"
case "${1:-}" in
--image) want="$want podman runc" ;;
"") ;;
*) echo "usage: $0 [--image]" >&2; exit 2 ;;
esac
missing=""
for pkg in $want; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages:$missing (run as root to install them)" >&2
    exit 1
fi
echo "deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# firewalld (and dbus) are for the tests, which run their own copy inside a
# namespace: the host's must not start, now or at boot. policy-rc.d (101:
# action not allowed) keeps the package scripts from starting services.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
case " $missing " in
*" firewalld "*) command -v systemctl >/dev/null && systemctl disable firewalld >/dev/null 2>&1 || true ;;
esac
