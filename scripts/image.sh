#!/bin/sh
# scripts/image.sh build IMAGE   builds the Containerfile's image, tagged IMAGE
#                                and localhost/cnibox:latest (make image)
# scripts/image.sh test IMAGE    builds it, then checks what running it does
#                                (make image-test, part of make test)
#
# Uses podman when it works, else docker (CONTAINER_ENGINE=... chooses).
# Where neither can build, `build` fails and `test` says SKIPPED: a skip
# that shows, never a silent pass. Run from the repository's top directory
# after `make static`.
set -eu

usage() { echo "usage: $0 build|test IMAGE" >&2; exit 2; }
[ $# = 2 ] || usage
action=$1
image=$2
bin=target/x86_64-unknown-linux-gnu/release/cnibox

# The first engine that answers: a docker CLI without a daemon does not.
find_engine() {
    for e in ${CONTAINER_ENGINE:-podman docker}; do
        command -v "$e" >/dev/null 2>&1 && "$e" info >/dev/null 2>&1 && { echo "$e"; return 0; }
    done
    return 1
}

build() {
    [ -x "$bin" ] || { echo "image: no $bin (run make static)" >&2; exit 1; }
    "$engine" build -q -f Containerfile -t "$image" -t localhost/cnibox:latest . >/dev/null
    echo "image: built $image with $engine ($(image_size) bytes; the binary is $(stat -c %s "$bin"))"
}

image_size() { "$engine" image inspect -f '{{.Size}}' "$image"; }

# `run ARGS...`: runs a container without a network (NETWORK=host: in the
# host's). The ulimits are set because the default ones cannot be where the
# runtime lacks CAP_SYS_RESOURCE (this CI's VM); runc because crun refuses
# hybrid cgroups.
run() {
    set -- --rm --network "${NETWORK:-none}" --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 "$@"
    if [ "$engine" = podman ] && command -v runc >/dev/null 2>&1; then set -- --runtime runc "$@"; fi
    "$engine" run "$@"
}

fail() { echo "image-test: FAILED: $*" >&2; exit 1; }

# Every entry of a directory with its inode, type, link target, size and mtime.
snapshot() { find "$1" -printf '%P %i %y %l %s %T@\n' | sort; }

test_install() {
    work=$(mktemp -d /tmp/cnibox-image-test.XXXXXX)
    trap 'rm -rf "$work"; "$engine" rm -f "cnibox-pause-$$" >/dev/null 2>&1 || true' EXIT
    mkdir -p "$work/bin" "$work/foreign" "$work/conf" "$work/net.d"

    echo "image-test: the default command installs into the host's bin dir"
    run -v "$work/bin:/host/opt/cni/bin" "$image" >"$work/out" || fail "first install: $(cat "$work/out")"
    for name in $("$bin" --list); do
        [ "$(readlink "$work/bin/$name")" = cnibox ] || fail "$name is not a link to cnibox"
    done
    cmp -s "$bin" "$work/bin/cnibox" || fail "the installed cnibox is not the built one"
    echo '{}' | CNI_COMMAND=VERSION "$work/bin/loopback" | grep -q supportedVersions || fail "loopback does not answer VERSION"

    echo "image-test: a second run changes nothing"
    before=$(snapshot "$work/bin")
    run -v "$work/bin:/host/opt/cni/bin" "$image" >"$work/out" || fail "second install: $(cat "$work/out")"
    grep -q "up to date" "$work/out" && grep -q "^cnibox: 0 links created" "$work/out" || fail "second run: $(cat "$work/out")"
    [ "$before" = "$(snapshot "$work/bin")" ] || fail "the second run changed $work/bin"

    echo "image-test: a foreign plugin file is left alone without --force"
    printf '#!/bin/sh\necho foreign\n' >"$work/foreign/bridge"
    if run -v "$work/foreign:/host/opt/cni/bin" "$image" >"$work/out" 2>&1; then fail "a skipped file must fail the run"; fi
    grep -q "kept existing /host/opt/cni/bin/bridge" "$work/out" || fail "not reported: $(cat "$work/out")"
    [ "$(head -2 "$work/foreign/bridge" | tail -1)" = "echo foreign" ] || fail "the foreign bridge was changed"
    [ "$(readlink "$work/foreign/ptp")" = cnibox ] || fail "the other links were not made"
    run -v "$work/foreign:/host/opt/cni/bin" "$image" --force /host/opt/cni/bin >"$work/out" || fail "--force: $(cat "$work/out")"
    [ "$(readlink "$work/foreign/bridge")" = cnibox ] || fail "--force did not replace bridge"

    echo "image-test: --conflist writes into an empty config dir only"
    echo '{"cniVersion":"1.0.0","name":"img","plugins":[{"type":"loopback"}]}' >"$work/conf/10-img.conflist"
    conf_args="--conflist /conf/10-img.conflist --conf-dir /host/etc/cni/net.d /host/opt/cni/bin"
    # shellcheck disable=SC2086 # conf_args is split on purpose
    run -v "$work/bin:/host/opt/cni/bin" -v "$work/net.d:/host/etc/cni/net.d" -v "$work/conf:/conf:ro" "$image" $conf_args \
        >"$work/out" || fail "--conflist: $(cat "$work/out")"
    cmp -s "$work/conf/10-img.conflist" "$work/net.d/10-img.conflist" || fail "the conflist was not written"
    rm "$work/net.d/10-img.conflist"
    echo '{"cniVersion":"1.0.0","name":"mine","type":"loopback"}' >"$work/net.d/05-mine.conf"
    # shellcheck disable=SC2086
    run -v "$work/bin:/host/opt/cni/bin" -v "$work/net.d:/host/etc/cni/net.d" -v "$work/conf:/conf:ro" "$image" $conf_args \
        >"$work/out" || fail "--conflist: $(cat "$work/out")"
    [ ! -e "$work/net.d/10-img.conflist" ] || fail "a conflist was written beside the node's own"

    echo "image-test: /cnibox pause exits 0 on SIGTERM (as PID 1)"
    name=cnibox-pause-$$
    run --name "$name" --entrypoint /cnibox "$image" pause &
    runner=$!
    tries=0
    until [ "$("$engine" inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ]; do
        tries=$((tries + 1))
        [ $tries -le 100 ] || fail "the pause container did not start"
        sleep 0.1
    done
    # stop sends SIGTERM, and SIGKILL after -t seconds (exit code 137).
    "$engine" stop -t 20 "$name" >/dev/null
    status=0
    wait "$runner" || status=$?
    [ "$status" = 0 ] || fail "pause exited $status on SIGTERM"

    test_dhcp_daemon

    echo "image-test: the image adds $(($(image_size) - $(stat -c %s "$bin"))) bytes to the binary"
    [ $(($(image_size) - $(stat -c %s "$bin"))) -lt 500000 ] || fail "the image is more than the binary"
    echo "image-test: passed"
}

# The dhcp daemon as contrib/kubernetes/cnibox-dhcp.yaml runs it (the host's
# /run/cni, netns directories, /proc and /var/lib/cni/dhcp under /host,
# -hostprefix /host, a read-only root)
# leases an IPv4 and an IPv6 address for a netns made after it started,
# through the host's dhcp plugin, from dnsmasq in a fake host netns made here,
# and keeps the node's DHCPv6 DUID in the host's state dir.
test_dhcp_daemon() {
    if [ "$(id -u)" != 0 ] || [ ! -x /usr/sbin/dnsmasq ]; then
        echo "image-test: SKIPPED the dhcp daemon check (needs root and dnsmasq)"
        return 0
    fi
    echo "image-test: the dhcp daemon's container leases addresses (IPv4 and IPv6)"
    host=cbimgh$$
    pod=cbimgc$$
    daemon=cnibox-dhcpd-$$
    trap 'dhcp_cleanup; rm -rf "$work"; "$engine" rm -f "cnibox-pause-$$" >/dev/null 2>&1 || true' EXIT
    mkdir -p "$work/run-cni" "$work/dhcp-state"
    ip netns add $host
    ip -n $host link add br0 type bridge
    ip -n $host addr add 10.99.7.1/24 dev br0
    ip -n $host addr add fd99:0:7::1/64 dev br0 nodad
    ip -n $host link set br0 up
    ip netns exec $host /usr/sbin/dnsmasq --conf-file=/dev/null --port=0 --interface=br0 --bind-interfaces \
        --user=root --no-ping --dhcp-range=10.99.7.10,10.99.7.50,255.255.255.0,2m \
        --dhcp-range=::100,::1ff,constructor:br0,64,2m --enable-ra \
        --dhcp-leasefile="$work/leases" --pid-file="$work/dnsmasq.pid"
    NETWORK=host run -d --name $daemon --privileged --read-only -e CNIBOX_LOG=info -v "$work/run-cni:/host/run/cni" \
        -v /run/netns:/host/run/netns:rslave -v /var/run/netns:/host/var/run/netns:rslave -v /proc:/host/proc:ro \
        -v "$work/dhcp-state:/host/var/lib/cni/dhcp" --entrypoint /cnibox "$image" dhcp daemon -hostprefix /host >/dev/null
    tries=0
    until [ -S "$work/run-cni/dhcp.sock" ]; do
        tries=$((tries + 1))
        [ $tries -le 100 ] || fail "the daemon does not listen: $("$engine" logs $daemon 2>&1)"
        sleep 0.1
    done
    ip netns add $pod
    ip -n $host link add vp1 type veth peer name eth0 netns $pod
    ip -n $host link set vp1 master br0 up
    conf='{"cniVersion":"1.0.0","name":"img","ipam":{"type":"dhcp","families":["ipv4","ipv6"],"daemonSocketPath":"'"$work"'/run-cni/dhcp.sock"}}'
    for verb in ADD DEL; do
        echo "$conf" | CNI_COMMAND=$verb CNI_CONTAINERID=img1 CNI_NETNS=/run/netns/$pod CNI_IFNAME=eth0 CNI_PATH=/nonexistent \
            "$work/bin/dhcp" >"$work/out" || fail "dhcp $verb: $(cat "$work/out"; "$engine" logs $daemon 2>&1)"
        [ $verb = DEL ] || grep -q '"address":"10.99.7.' "$work/out" || fail "no IPv4 lease: $(cat "$work/out")"
        [ $verb = DEL ] || grep -q '"address":"fd99:0:7::' "$work/out" || fail "no IPv6 lease: $(cat "$work/out")"
    done
    [ -n "$(ls "$work/dhcp-state")" ] || fail "the DUID is not kept in the host's state dir"
    "$engine" stop -t 10 $daemon >/dev/null
    [ ! -e "$work/run-cni/dhcp.sock" ] || fail "the daemon left its socket"
}

dhcp_cleanup() {
    [ -f "$work/dnsmasq.pid" ] && kill "$(cat "$work/dnsmasq.pid")" 2>/dev/null || true
    "$engine" rm -f "$daemon" >/dev/null 2>&1 || true
    ip netns del "$pod" 2>/dev/null || true
    ip netns del "$host" 2>/dev/null || true
}

if ! engine=$(find_engine); then
    case "$action" in
    build) echo "image: neither podman nor docker works here (apt-get install podman)" >&2; exit 1 ;;
    test) echo "image-test: SKIPPED: neither podman nor docker works here (.ci/run installs podman)"; exit 0 ;;
    esac
fi
case "$action" in
build) build ;;
test) build && test_install ;;
*) usage ;;
esac
