#!/bin/sh
# make demo: installs cnibox into a temporary plugin directory, then networks
# two container namespaces with the installed applets, driven by cnibox's own
# runtime (`cnibox cnitool`): loopback, bridge + host-local (dual stack,
# masquerade), portmap and tuning. It shows what happened and cleans up.
#
# Everything lives in namespaces made here: a fake "host" netns and two
# container netns. The real host's network is never touched.
set -eu

bin=${1:-target/release/cnibox}
[ "$(id -u)" = 0 ] || { echo "demo: needs root (network namespaces)" >&2; exit 1; }
[ -x "$bin" ] || { echo "demo: no binary at $bin (run make release)" >&2; exit 1; }
command -v busybox >/dev/null || { echo "demo: needs busybox (scripts/deps.sh installs it)" >&2; exit 1; }

tag=cbdemo$$
work=$(mktemp -d /tmp/cnibox-demo.XXXXXX)
host=${tag}h
c1=${tag}a
c2=${tag}b
listener=""

cleanup() {
    [ -n "$listener" ] && kill "$listener" 2>/dev/null || true
    if [ -x "$work/bin/cnibox" ]; then
        for c in $c1 $c2; do in_host cnitool del demo-net "/run/netns/$c" 2>/dev/null || true; done
    fi
    for ns in $c1 $c2 $host; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n== %s\n' "$*"; }
indent() { sed 's/^/    /'; }
# cnibox's runtime, run in the fake host netns the way a container runtime runs plugins.
in_host() {
    ip netns exec $host env NETCONFPATH="$work/net.d" CNI_PATH="$work/bin" CNI_CACHE_DIR="$work/cache" \
        CAP_ARGS="${CAP_ARGS:-}" CNI_IFNAME="${CNI_IFNAME:-eth0}" "$work/bin/cnibox" "$@"
}

step "Installing cnibox into $work/bin"
"$bin" install "$work/bin" | indent
echo "    $(ls "$work/bin" | wc -l) entries, one binary of $(stat -c %s "$work/bin/cnibox") bytes"

step "Creating a fake host netns ($host) and two container netns ($c1, $c2)"
for ns in $host $c1 $c2; do ip netns add "$ns"; done
ip -n $host link set lo up

mkdir -p "$work/net.d"
cat > "$work/net.d/10-demo.conflist" <<CONF
{
  "cniVersion": "1.1.0",
  "name": "demo-net",
  "plugins": [
    { "type": "bridge", "bridge": "cni-demo0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": { "type": "host-local", "dataDir": "$work/ipam",
                "ranges": [[{ "subnet": "10.88.7.0/24" }], [{ "subnet": "fd00:88:7::/64" }]],
                "routes": [{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }] } },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "tuning", "sysctl": { "net.ipv4.conf.IFNAME.arp_notify": "1" } }
  ]
}
CONF
cat > "$work/net.d/99-loopback.conf" <<CONF
{ "cniVersion": "1.1.0", "name": "lo", "type": "loopback" }
CONF
step "Network configurations ($work/net.d)"
indent < "$work/net.d/10-demo.conflist"

step "cnitool add: loopback and demo-net for both containers"
for c in $c1 $c2; do
    CNI_IFNAME=lo in_host cnitool add lo "/run/netns/$c" >/dev/null
done
CAP_ARGS='{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}' \
    in_host cnitool add demo-net "/run/netns/$c1" > "$work/c1.json"
in_host cnitool add demo-net "/run/netns/$c2" > "$work/c2.json"
echo "    result for $c1:"; indent < "$work/c1.json"
addr() { tr -d ' \n' < "$1" | sed -n 's/.*"ips":\[{"address":"\([0-9.]*\)\/.*/\1/p'; }
ip1=$(addr "$work/c1.json")
ip2=$(addr "$work/c2.json")

step "What the kernel shows"
echo "  fake host:"; ip -n $host -br addr | indent
echo "  $c1:"; ip -n $c1 -br addr | indent
echo "  host-local store:"; ls "$work/ipam/demo-net" | indent
echo "  cnibox's nftables tables in the fake host:"; ip netns exec $host nft list tables | grep cnibox | indent

step "$c1 ($ip1) pings $c2 ($ip2), the gateway and the host side"
# Fails the demo (set -e) when a ping gets no answer.
ping_from() { # netns ping-applet address
    out=$(ip netns exec "$1" busybox "$2" -c 2 -W 2 "$3") || { echo "$out" | indent; echo "demo: no answer from $3" >&2; exit 1; }
    echo "$out" | grep -E 'bytes from|received' | indent
}
ping_from $c1 ping "$ip2"
ping_from $c1 ping 10.88.7.1
ping_from $c2 ping6 fd00:88:7::1

step "portmap: the fake host's port 8080 reaches $c1's port 80"
ip netns exec $c1 busybox nc -l -p 80 -e echo "hello from $c1" &
listener=$!
sleep 0.3
printf '    answer: %s\n' "$(ip netns exec $host busybox nc -w 2 10.88.7.1 8080 </dev/null)"
kill "$listener" 2>/dev/null || true; listener=""

step "cnitool check"
for c in $c1 $c2; do in_host cnitool check demo-net "/run/netns/$c" && echo "    $c: CHECK passed"; done

step "cnitool del (the chain in reverse, with the cached ADD-time config)"
for c in $c1 $c2; do
    in_host cnitool del demo-net "/run/netns/$c"
    CNI_IFNAME=lo in_host cnitool del lo "/run/netns/$c"
    echo "    $c: deleted"
done
echo "    host links left: $(ip -n $host -br link | awk '{print $1}' | tr '\n' ' ')"
echo "    reservations left: $(ls "$work/ipam/demo-net" | grep -vc -e lock -e last_reserved || true)"
echo "    nft elements naming a container left: $(ip netns exec $host nft list ruleset | grep -c "$tag" || true)"
step "Done: the namespaces and the temporary directory are removed on exit"
