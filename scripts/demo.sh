#!/bin/sh
# make demo: installs cnibox into a temporary plugin directory and networks
# two namespaces with the installed applets (loopback, bridge, host-local,
# portmap), shows what happened, and cleans everything up.
#
# Everything lives in namespaces made here: a fake "host" netns and two
# container netns. The real host's network is never touched.
set -eu

bin=${1:-target/release/cnibox}
[ "$(id -u)" = 0 ] || { echo "demo: needs root (network namespaces)" >&2; exit 1; }
[ -x "$bin" ] || { echo "demo: no binary at $bin (run make release)" >&2; exit 1; }

tag=demo$$
work=$(mktemp -d /tmp/cnibox-demo.XXXXXX)
host=${tag}host
c1=${tag}c1
c2=${tag}c2

cleanup() {
    for ns in $c1 $c2 $host; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Installing cnibox into $work/bin"
./install.sh --bin "$bin" "$work/bin"
ls -l "$work/bin" | awk 'NR>1 {print "  " $9, $10, $11}' | head -40

step "Creating a fake host netns and two container netns"
for ns in $host $c1 $c2; do ip netns add "$ns"; done
ip -n $host link set lo up
echo "  $host (host), $c1 and $c2 (containers)"

cat > "$work/net.conflist" <<CONF
{
  "cniVersion": "1.1.0",
  "name": "demo-net",
  "plugins": [
    { "type": "bridge", "bridge": "cni-demo0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": { "type": "host-local", "dataDir": "$work/ipam",
                "ranges": [[{ "subnet": "10.88.7.0/24" }], [{ "subnet": "fd00:88:7::/64" }]],
                "routes": [{ "dst": "0.0.0.0/0" }] } },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
CONF
step "The network configuration"
sed 's/^/  /' "$work/net.conflist"

# Runs one plugin of the list the way a runtime does: env + config on stdin.
plugin_conf() { # index prevResult-file
    python3 - "$work/net.conflist" "$1" "${2:-}" <<'PY'
import json, sys
conf = json.load(open(sys.argv[1])); p = dict(conf["plugins"][int(sys.argv[2])])
p["name"] = conf["name"]; p["cniVersion"] = conf["cniVersion"]
if sys.argv[3]:
    p["prevResult"] = json.load(open(sys.argv[3]))
print(json.dumps(p))
PY
}
run() { # verb container-ns plugin-index [prevResult-file]
    plugin=$(plugin_conf "$3" | python3 -c 'import json,sys; print(json.load(sys.stdin)["type"])')
    plugin_conf "$3" "${4:-}" | ip netns exec $host env CNI_COMMAND=$1 CNI_CONTAINERID=$2 \
        CNI_NETNS=/run/netns/$2 CNI_IFNAME=eth0 CNI_PATH="$work/bin" "$work/bin/$plugin"
}

step "loopback ADD in both containers"
for c in $c1 $c2; do
    echo '{"cniVersion":"1.1.0","name":"lo","type":"loopback"}' | CNI_COMMAND=ADD CNI_CONTAINERID=$c \
        CNI_NETNS=/run/netns/$c CNI_IFNAME=lo CNI_PATH="$work/bin" "$work/bin/loopback" >/dev/null
    echo "  $c: $(ip -n $c -br link show lo)"
done

for c in $c1 $c2; do
    step "bridge + host-local ADD for $c"
    run ADD $c 0 > "$work/$c.result"
    python3 -m json.tool "$work/$c.result" | sed 's/^/  /'
    run ADD $c 1 "$work/$c.result" > /dev/null
done

ip1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ips"][0]["address"].split("/")[0])' "$work/$c1.result")
ip2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ips"][0]["address"].split("/")[0])' "$work/$c2.result")

step "What the kernel shows"
echo "  host:"; ip -n $host -br addr | sed 's/^/    /'
echo "  $c1:"; ip -n $c1 -br addr | sed 's/^/    /'
echo "  host-local store:"; ls "$work/ipam/demo-net" | sed 's/^/    /'

step "$c1 pings $c2 ($ip2) and the gateway"
ip netns exec $c1 ping -c 2 -W 2 "$ip2" | sed 's/^/  /'
ip netns exec $c1 ping -c 1 -W 2 10.88.7.1 | sed 's/^/  /'

step "CHECK for both containers"
for c in $c1 $c2; do run CHECK $c 0 "$work/$c.result" && echo "  $c: CHECK ok"; done

step "DEL both containers (in reverse plugin order)"
for c in $c1 $c2; do
    run DEL $c 1 "$work/$c.result"
    run DEL $c 0 "$work/$c.result"
    echo "  $c: deleted"
done
echo "  host links left: $(ip -n $host -br link | awk '{print $1}' | tr '\n' ' ')"
echo "  reservations left: $(ls "$work/ipam/demo-net" | grep -vc -e lock -e last_reserved || true)"
step "Done: everything the demo made is removed on exit"
