#!/bin/sh
# Installs the Debian packages the tests, the demo and the benchmarks use,
# skipping everything already present (so repeated runs cost nothing).
set -eu
want="iproute2 nftables containernetworking-plugins conntrack dnsmasq-base busybox-static qemu-system-x86 linux-image-amd64 cpio kmod iptables firewalld dbus-daemon dbus-bin"
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
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
