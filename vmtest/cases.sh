#!/bin/sh
# The cases run inside the test VM (the VM's root netns plays the host).
# Prints one line per case: "PASS name", "FAIL name: why" or "SKIP name: why",
# then "SUMMARY passed=N failed=N skipped=N".
# usage: cases.sh [CASE...]   (default: all)
#
# The world every case shares: a veth m0 (host) <-> m0p (netns "out", the
# "network" the master is plugged into):
#   out: m0p 10.1.0.1/24 + 10.30.0.1/32 on lo, m0p.100 (VLAN 100) 10.2.0.1/24,
#        routes to the ipvlan l3/l3s container subnets via the host 10.1.0.254
#   host: m0 10.1.0.254/24, default route via 10.1.0.1

CNI_PATH=/opt/cni/bin:/opt/cni/ref
export CNIBOX_LOG=${CNIBOX_LOG:-warn}
passed=0 failed=0 skipped=0
OUT=""

# iproute2 (busybox's ash would otherwise run its own, smaller ip applet).
ip() { /sbin/ip "$@"; }

fail() {
    echo "$*"
    return 1
}

have() { [ -e "/opt/cni/bin/$1" ] || [ -e "/opt/cni/ref/$1" ]; }

# cni VERB PLUGIN CONTAINER_ID NETNS IFNAME CONF: runs one plugin call in the
# host netns (NETNS "-": none); its stdout lands in $OUT; fails with the error
# on a non-zero exit.
cni() {
    local netns=/run/netns/$4 rc
    [ "$4" = "-" ] && netns=""
    OUT=$(printf '%s' "$6" | CNI_COMMAND=$1 CNI_CONTAINERID=$3 CNI_NETNS=$netns CNI_IFNAME=$5 \
        CNI_PATH=$CNI_PATH "/opt/cni/bin/$2" 2>/tmp/cni.err)
    rc=$?
    # Compact, so the checks need not care how a plugin formats its JSON.
    OUT=$(printf '%s' "$OUT" | tr -d ' \n')
    [ $rc = 0 ] || fail "$1 $2 failed: $OUT $(cat /tmp/cni.err)"
}

# cni_fails ...: like cni, but the call must fail.
cni_fails() {
    if cni "$@" >/dev/null; then fail "$1 $2 unexpectedly succeeded: $OUT"; return 1; fi
    return 0
}

# with_prev CONF RESULT: CONF with "prevResult": RESULT added.
with_prev() { printf '%s,"prevResult":%s}' "${1%\}}" "$2"; }

in_ns() {
    local ns=$1
    shift
    nsenter --net="/run/netns/$ns" "$@"
}

pings() { in_ns "$1" ping -c 1 -W 2 "$2" >/dev/null 2>&1 || fail "$1 cannot ping $2"; }

link_gone() {
    if ip -n "$1" link show "$2" >/dev/null 2>&1; then fail "$2 still exists in $1"; return 1; fi
    return 0
}

setup_world() {
    ip netns add out
    ip link add m0 type veth peer name m0p
    ip link set m0p netns out
    ip addr add 10.1.0.254/24 dev m0
    ip link set m0 up
    ip -n out link set lo up
    ip -n out link set m0p up
    ip -n out addr add 10.1.0.1/24 dev m0p
    ip -n out addr add 10.30.0.1/32 dev lo
    ip -n out link add link m0p name m0p.100 type vlan id 100
    ip -n out link set m0p.100 up
    ip -n out addr add 10.2.0.1/24 dev m0p.100
    ip -n out route add 10.1.3.0/24 via 10.1.0.254
    ip -n out route add 10.1.4.0/24 via 10.1.0.254
    ip -n out route add 10.1.5.0/24 via 10.1.0.254
    # The host's default route: ipvlan without "master" takes its link (m0).
    ip route add default via 10.1.0.1 dev m0
    ip -n out addr add fd00:1::1/64 dev m0p nodad
    ip -n out addr add fd00:30::1/128 dev lo
}

# SELinux is the VM's LSM (without a policy, every process is "kernel").
selinux_is_lsm() { [ "$(cat /proc/self/attr/current 2>/dev/null)" = kernel ]; }

static_ipam() { printf '{"type":"static","addresses":[{"address":"%s"}]%s}' "$1" "${2:+,\"routes\":$2}"; }

# ipvlan in MODE: ADD, CHECK, connectivity, a tampered CHECK, DEL twice,
# and DEL with the netns gone.
case_ipvlan() {
    local mode=$1 addr=$2 ipam conf result
    ip netns add "c-$mode"
    if [ "$mode" = l2 ]; then
        have host-local || fail "no host-local IPAM" || return 1
        ipam='{"type":"host-local","dataDir":"/run/ipam-'$mode'","ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.10","rangeEnd":"10.1.0.19","gateway":"10.1.0.1"}]],"routes":[{"dst":"0.0.0.0/0"}]}'
    else
        ipam=$(static_ipam "$addr/24" '[{"dst":"0.0.0.0/0","gw":"'"${addr%.*}"'.1"}]')
    fi
    # l3s leaves "master" out: the host's default-route link (m0) it is.
    local master='"master":"m0",'
    [ "$mode" = l3s ] && master=""
    conf='{"cniVersion":"1.0.0","name":"ipv-'$mode'","type":"ipvlan",'$master'"mode":"'$mode'","ipam":'$ipam'}'
    cni ADD ipvlan "id-$mode" "c-$mode" eth0 "$conf" || return 1
    result=$OUT
    echo "$result" | grep -q '"name":"eth0"' || fail "ADD result names no eth0: $result" || return 1
    ip -n "c-$mode" -d link show eth0 | grep -q "ipvlan.*mode $mode " || fail "eth0 is no ipvlan $mode: $(ip -n "c-$mode" -d link show eth0)" || return 1
    cni CHECK ipvlan "id-$mode" "c-$mode" eth0 "$(with_prev "$conf" "$result")" || return 1
    pings "c-$mode" 10.1.0.1 || return 1
    # A second ADD of the same name must fail and leave the first alone.
    cni_fails ADD ipvlan "id-$mode-b" "c-$mode" eth0 "$conf" || return 1
    ip -n "c-$mode" link show eth0 >/dev/null || fail "a failed ADD removed eth0" || return 1
    if [ "$mode" = l2 ]; then
        # Rollback: a route the kernel refuses fails the ADD after IPAM; the
        # link and the host-local reservation must both be gone.
        local bad
        bad=$(echo "$conf" | sed 's/"name":"ipv-l2"/"name":"ipv-bad"/; s|"routes":\[{"dst":"0.0.0.0/0"}\]|"routes":[{"dst":"10.50.0.0/16","gw":"10.99.0.1"}]|')
        cni_fails ADD ipvlan id-bad "c-$mode" eth1 "$bad" || return 1
        link_gone "c-$mode" eth1 || return 1
        if ls /run/ipam-l2/ipv-bad 2>/dev/null | grep -q '^10\.'; then
            fail "IPAM reservation kept after a failed ADD: $(ls /run/ipam-l2/ipv-bad)"
            return 1
        fi
    fi
    ip -n "c-$mode" addr flush dev eth0
    cni_fails CHECK ipvlan "id-$mode" "c-$mode" eth0 "$(with_prev "$conf" "$result")" || return 1
    cni DEL ipvlan "id-$mode" "c-$mode" eth0 "$conf" || return 1
    link_gone "c-$mode" eth0 || return 1
    cni DEL ipvlan "id-$mode" "c-$mode" eth0 "$conf" || return 1
    ip netns del "c-$mode"
    cni DEL ipvlan "id-$mode" "c-$mode" eth0 "$conf" || return 1
    cni DEL ipvlan "id-$mode" - eth0 "$conf" || return 1
}

case_ipvlan_in_container() {
    # linkInContainer: the master (a veth end) lives in the container netns.
    local conf
    ip netns add c-lic
    ip link add lic0 type veth peer name lic0p
    ip link set lic0 netns c-lic
    ip link set lic0p netns out
    ip -n out link set lic0p up
    ip -n out addr add 10.6.0.1/24 dev lic0p
    ip -n c-lic link set lic0 up
    conf='{"cniVersion":"1.0.0","name":"ipv-lic","type":"ipvlan","master":"lic0","linkInContainer":true,"ipam":'"$(static_ipam 10.6.0.2/24)"'}'
    cni ADD ipvlan id-lic c-lic eth0 "$conf" || return 1
    cni CHECK ipvlan id-lic c-lic eth0 "$(with_prev "$conf" "$OUT")" || return 1
    pings c-lic 10.6.0.1 || return 1
    cni DEL ipvlan id-lic c-lic eth0 "$conf" || return 1
    link_gone c-lic eth0 || return 1
    ip netns del c-lic
}

# ipvlan chained without IPAM: the master is the prevResult's only
# interface and the addresses are the prevResult's.
case_ipvlan_chained() {
    local conf prev
    ip netns add c-chain
    prev='{"cniVersion":"1.0.0","interfaces":[{"name":"m0"}],"ips":[{"address":"10.1.0.60/24","gateway":"10.1.0.1"}],"routes":[{"dst":"10.30.0.0/24"}]}'
    conf='{"cniVersion":"1.0.0","name":"ipv-chain","type":"ipvlan","prevResult":'$prev'}'
    cni ADD ipvlan id-chain c-chain eth0 "$conf" || return 1
    echo "$OUT" | grep -q '"sandbox":"/run/netns/c-chain"' || fail "result lacks the container interface: $OUT" || return 1
    ip -n c-chain route show | grep -q "10.30.0.0/24 via 10.1.0.1" || fail "prevResult route missing" || return 1
    pings c-chain 10.30.0.1 || return 1
    cni DEL ipvlan id-chain c-chain eth0 "$conf" || return 1
    link_gone c-chain eth0 || return 1
    ip netns del c-chain
}

# Concurrent ADDs on one master: distinct links and addresses, no clash of
# the temporary link names.
case_ipvlan_parallel() {
    local conf i addrs
    have host-local || fail "no host-local IPAM" || return 1
    conf='{"cniVersion":"1.0.0","name":"ipv-par","type":"ipvlan","master":"m0","ipam":{"type":"host-local","dataDir":"/run/ipam-par","ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.100","rangeEnd":"10.1.0.120"}]]}}'
    for i in 1 2 3 4 5 6; do ip netns add "c-par$i"; done
    for i in 1 2 3 4 5 6; do
        (cni ADD ipvlan "id-par$i" "c-par$i" eth0 "$conf" >"/tmp/par$i.out" 2>&1 || echo "ADD $i: $OUT" >>"/tmp/par$i.out") &
    done
    wait
    for i in 1 2 3 4 5 6; do
        if [ -s "/tmp/par$i.out" ]; then fail "$(cat "/tmp/par$i.out")"; return 1; fi
        ip -n "c-par$i" link show eth0 >/dev/null 2>&1 || fail "c-par$i has no eth0" || return 1
    done
    addrs=$(for i in 1 2 3 4 5 6; do ip -n "c-par$i" -4 -o addr show eth0 | sed -n 's/.*inet \([0-9.]*\).*/\1/p'; done | sort -u | wc -l)
    [ "$addrs" = 6 ] || fail "expected 6 distinct addresses, got $addrs" || return 1
    pings c-par6 10.1.0.1 || return 1
    for i in 1 2 3 4 5 6; do
        cni DEL ipvlan "id-par$i" "c-par$i" eth0 "$conf" || return 1
        ip netns del "c-par$i"
    done
    if ip -o link show | grep -q '^[0-9]*: cni'; then fail "temporary links left in the host"; return 1; fi
}

case_vlan_in_container() {
    local conf
    ip netns add c-vlic
    ip link add vlic0 type veth peer name vlic0p
    ip link set vlic0 netns c-vlic
    ip link set vlic0p netns out
    ip -n out link set vlic0p up
    ip -n out link add link vlic0p name vlic0p.7 type vlan id 7
    ip -n out link set vlic0p.7 up
    ip -n out addr add 10.7.7.1/24 dev vlic0p.7
    ip -n c-vlic link set vlic0 up
    conf='{"cniVersion":"1.0.0","name":"vlan7","type":"vlan","master":"vlic0","vlanId":7,"linkInContainer":true,"ipam":'"$(static_ipam 10.7.7.2/24)"'}'
    cni ADD vlan id-vlic c-vlic eth0 "$conf" || return 1
    cni CHECK vlan id-vlic c-vlic eth0 "$(with_prev "$conf" "$OUT")" || return 1
    pings c-vlic 10.7.7.1 || return 1
    cni DEL vlan id-vlic c-vlic eth0 "$conf" || return 1
    link_gone c-vlic eth0 || return 1
    ip -n c-vlic link show vlic0 >/dev/null || fail "DEL removed the master" || return 1
    ip netns del c-vlic
}

case_vlan() {
    local conf result
    ip netns add c-vlan
    conf='{"cniVersion":"1.0.0","name":"vlan100","type":"vlan","master":"m0","vlanId":100,"mtu":1400,"ipam":'"$(static_ipam 10.2.0.2/24)"'}'
    cni ADD vlan id-vlan c-vlan eth0 "$conf" || return 1
    result=$OUT
    ip -n c-vlan -d link show eth0 | grep -q "vlan protocol 802.1Q id 100" || fail "eth0 is no VLAN 100" || return 1
    ip -n c-vlan link show eth0 | grep -q "mtu 1400" || fail "eth0 MTU is not 1400" || return 1
    cni CHECK vlan id-vlan c-vlan eth0 "$(with_prev "$conf" "$result")" || return 1
    pings c-vlan 10.2.0.1 || return 1
    # Out-of-range VLAN ID and a missing master: code 7, nothing left behind.
    cni_fails ADD vlan id-vlan2 c-vlan eth1 "$(echo "$conf" | sed 's/"vlanId":100/"vlanId":4095/')" || return 1
    echo "$OUT" | grep -q '"code":7' || fail "vlanId 4095 gave $OUT" || return 1
    cni_fails ADD vlan id-vlan2 c-vlan eth1 "$(echo "$conf" | sed 's/"master":"m0"/"master":"nope0"/')" || return 1
    link_gone c-vlan eth1 || return 1
    cni DEL vlan id-vlan c-vlan eth0 "$conf" || return 1
    link_gone c-vlan eth0 || return 1
    cni DEL vlan id-vlan c-vlan eth0 "$conf" || return 1
    ip netns del c-vlan
    cni DEL vlan id-vlan c-vlan eth0 "$conf" || return 1
}

case_dummy() {
    local conf result
    ip netns add c-dummy
    ip -n c-dummy link set lo up
    conf='{"cniVersion":"1.0.0","name":"dummy","type":"dummy","ipam":'"$(static_ipam 10.5.0.2/24)"'}'
    cni ADD dummy id-dummy c-dummy eth0 "$conf" || return 1
    result=$OUT
    ip -n c-dummy -d link show eth0 | grep -q dummy || fail "eth0 is no dummy" || return 1
    cni CHECK dummy id-dummy c-dummy eth0 "$(with_prev "$conf" "$result")" || return 1
    pings c-dummy 10.5.0.2 || return 1
    ip -n c-dummy link set eth0 down
    cni_fails CHECK dummy id-dummy c-dummy eth0 "$(with_prev "$conf" "$result")" || return 1
    cni DEL dummy id-dummy c-dummy eth0 "$conf" || return 1
    link_gone c-dummy eth0 || return 1
    cni DEL dummy id-dummy c-dummy eth0 "$conf" || return 1
    cni_fails ADD dummy id-dummy c-dummy eth0 '{"cniVersion":"1.0.0","name":"dummy","type":"dummy"}' || return 1
    link_gone c-dummy eth0 || return 1
    ip netns del c-dummy
}

# tap with selinuxContext: made by a child exec'd under that context. The VM
# boots with SELinux as its LSM but no policy loaded, so every context is
# accepted (and maps to "kernel"): this proves the labelled path creates the
# device in the container, not that a policy sees the label.
case_tap_selinux() {
    local conf result link
    selinux_is_lsm || { echo "SKIP: SELinux is not this VM's LSM"; return 2; }
    ip netns add c-tap
    conf='{"cniVersion":"1.0.0","name":"tap","type":"tap","selinuxContext":"system_u:system_r:svirt_t:s0:c1,c2",
        "multiQueue":true,"owner":1000,"group":2000,"mtu":1400,"ipam":'"$(static_ipam 10.6.0.2/24)"'}'
    cni ADD tap id-tap c-tap eth0 "$conf" || return 1
    result=$OUT
    link=$(ip -n c-tap -d link show eth0)
    for want in "tun type tap" multi_queue "user 1000" "group 2000" "mtu 1400"; do
        echo "$link" | grep -q "$want" || fail "eth0 lacks $want: $link" || return 1
    done
    ip -n c-tap addr show eth0 | grep -q 10.6.0.2/24 || fail "eth0 has no 10.6.0.2/24" || return 1
    cni CHECK tap id-tap c-tap eth0 "$(with_prev "$conf" "$result")" || return 1
    cni DEL tap id-tap c-tap eth0 "$conf" || return 1
    link_gone c-tap eth0 || return 1
    cni DEL tap id-tap c-tap eth0 "$conf" || return 1
    ip netns del c-tap
}

# vrf chained after ipvlan: eth0's route to 10.30.0.0/24 moves into the VRF
# table; a second interface joins the same VRF; the VRF goes with the last.
case_vrf() {
    local ipv vrf r0 r1 table
    ip netns add c-vrf
    ipv='{"cniVersion":"1.0.0","name":"vrfnet","type":"ipvlan","master":"m0","ipam":{"type":"static","addresses":[{"address":"10.1.0.40/24"},{"address":"fd00:1::40/64"}],"routes":[{"dst":"10.30.0.0/24","gw":"10.1.0.1"},{"dst":"fd00:30::/64","gw":"fd00:1::1"}]}}'
    vrf='{"cniVersion":"1.0.0","name":"vrfnet","type":"vrf","vrfname":"blue"}'
    cni ADD ipvlan id-vrf c-vrf eth0 "$ipv" || return 1
    cni ADD vrf id-vrf c-vrf eth0 "$(with_prev "$vrf" "$OUT")" || return 1
    r0=$OUT
    ip -n c-vrf -d link show blue | grep -q "vrf table" || fail "no VRF blue" || return 1
    table=$(ip -n c-vrf -d link show blue | sed -n 's/.*vrf table \([0-9]*\).*/\1/p')
    ip -n c-vrf link show eth0 | grep -q "master blue" || fail "eth0 not in blue" || return 1
    ip -n c-vrf route show table "$table" | grep -q "10.30.0.0/24 via 10.1.0.1" ||
        fail "route not moved to table $table: $(ip -n c-vrf route show table "$table")" || return 1
    if ip -n c-vrf route show | grep -q 10.30.0.0; then fail "route still in main table"; return 1; fi
    in_ns c-vrf ping -c 1 -W 2 -I blue 10.30.0.1 >/dev/null 2>&1 || fail "no ping through the VRF" || return 1
    # The global IPv6 address survives the enslaving, its route moved too.
    ip -n c-vrf -6 addr show dev eth0 | grep -q "fd00:1::40/64" || fail "IPv6 address lost: $(ip -n c-vrf -6 addr show dev eth0)" || return 1
    ip -n c-vrf -6 route show table "$table" | grep -q "fd00:30::/64 via fd00:1::1" ||
        fail "IPv6 route not moved: $(ip -n c-vrf -6 route show table "$table")" || return 1
    in_ns c-vrf ping -c 1 -W 3 -I blue fd00:30::1 >/dev/null 2>&1 || fail "no IPv6 ping through the VRF" || return 1
    cni CHECK vrf id-vrf c-vrf eth0 "$(with_prev "$vrf" "$r0")" || return 1
    # The chain's CHECK runs ipvlan's too, with the routes now in the VRF table.
    cni CHECK ipvlan id-vrf c-vrf eth0 "$(with_prev "$ipv" "$r0")" || return 1
    # A second interface joins the existing VRF.
    cni ADD dummy id-vrf c-vrf eth1 '{"cniVersion":"1.0.0","name":"vrfnet","type":"dummy","ipam":'"$(static_ipam 10.7.0.2/24)"'}' || return 1
    cni ADD vrf id-vrf c-vrf eth1 "$(with_prev "$vrf" "$OUT")" || return 1
    r1=$OUT
    [ "$(ip -n c-vrf -d link show type vrf | grep -c 'vrf table')" = 1 ] || fail "more than one VRF" || return 1
    ip -n c-vrf link show eth1 | grep -q "master blue" || fail "eth1 not in blue" || return 1
    # A table that differs from the existing VRF's is refused.
    cni_fails ADD vrf id-vrf c-vrf eth1 "$(with_prev '{"cniVersion":"1.0.0","name":"vrfnet","type":"vrf","vrfname":"blue","table":4000}' "$r1")" || return 1
    cni DEL vrf id-vrf c-vrf eth1 "$vrf" || return 1
    ip -n c-vrf link show blue >/dev/null 2>&1 || fail "VRF removed while eth0 still uses it" || return 1
    cni_fails CHECK vrf id-vrf c-vrf eth1 "$(with_prev "$vrf" "$r1")" || return 1
    cni DEL vrf id-vrf c-vrf eth0 "$vrf" || return 1
    link_gone c-vrf blue || return 1
    cni DEL vrf id-vrf c-vrf eth0 "$vrf" || return 1
    cni DEL ipvlan id-vrf c-vrf eth0 "$ipv" || return 1
    ip netns del c-vrf
    cni DEL vrf id-vrf c-vrf eth0 "$vrf" || return 1
}

case_macvlan() {
    local conf
    [ -e /opt/cni/bin/macvlan ] || { echo "SKIP: no macvlan applet"; return 2; }
    ip netns add c-mv
    conf='{"cniVersion":"1.0.0","name":"mv","type":"macvlan","master":"m0","mode":"bridge","ipam":'"$(static_ipam 10.1.0.50/24)"'}'
    cni ADD macvlan id-mv c-mv eth0 "$conf" || return 1
    cni CHECK macvlan id-mv c-mv eth0 "$(with_prev "$conf" "$OUT")" || return 1
    pings c-mv 10.1.0.1 || return 1
    cni DEL macvlan id-mv c-mv eth0 "$conf" || return 1
    link_gone c-mv eth0 || return 1
    ip netns del c-mv
}

# bridge + host-local: two containers on one bridge reach each other and
# the gateway; ipMasq when nft is there.
case_bridge() {
    local conf masq=false r1
    [ -e /opt/cni/bin/bridge ] || { echo "SKIP: no bridge applet"; return 2; }
    have host-local || fail "no host-local IPAM" || return 1
    # ipMasq needs nft for cnibox's bridge (a link to cnibox); the reference's
    # (VMTEST_REF=bridge) wants iptables, which the VM lacks.
    [ -x /sbin/nft ] && [ -L /opt/cni/bin/bridge ] && masq=true
    ip netns add c-br1
    ip netns add c-br2
    conf='{"cniVersion":"1.0.0","name":"brnet","type":"bridge","bridge":"cnibr0","isGateway":true,"ipMasq":'$masq',"ipam":{"type":"host-local","dataDir":"/run/ipam-br","ranges":[[{"subnet":"10.8.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}'
    cni ADD bridge id-br1 c-br1 eth0 "$conf" || return 1
    r1=$OUT
    cni ADD bridge id-br2 c-br2 eth0 "$conf" || return 1
    cni CHECK bridge id-br1 c-br1 eth0 "$(with_prev "$conf" "$r1")" || return 1
    pings c-br1 10.8.0.1 || return 1
    pings c-br1 "$(ip -n c-br2 -4 -o addr show eth0 | sed -n 's/.*inet \([0-9.]*\).*/\1/p')" || return 1
    # Through the host to the outside network (masqueraded when ipMasq).
    $masq && { pings c-br1 10.1.0.1 || return 1; }
    # With prevResult the masquerade element is deleted by key; this kernel
    # (6.1) has no DESTROYSETELEM, so the DELSETELEM fallback runs. Twice:
    # the second finds nothing to delete.
    cni DEL bridge id-br1 c-br1 eth0 "$(with_prev "$conf" "$r1")" || return 1
    if $masq && nft list table inet cnibox-masq | grep -q 'id-br1'; then
        fail "DEL by key left id-br1's masquerade element: $(nft list table inet cnibox-masq)" || return 1
    fi
    cni DEL bridge id-br1 c-br1 eth0 "$(with_prev "$conf" "$r1")" || return 1
    cni DEL bridge id-br2 c-br2 eth0 "$conf" || return 1
    link_gone c-br1 eth0 || return 1
    cni DEL bridge id-br1 c-br1 eth0 "$conf" || return 1
    ip netns del c-br1
    ip netns del c-br2
}

# The host end (bridge port) of container NS's eth0.
host_port() {
    local idx
    idx=$(ip -n "$1" -o link show eth0 | sed -n 's/.*eth0@if\([0-9]*\).*/\1/p')
    ip -o link show | sed -n "s/^$idx: \([^@:]*\).*/\1/p"
}

# A bridge port's VLANs, one "VID FLAGS..." line each (e.g. "100 PVID Egress Untagged").
port_vlans() {
    /sbin/bridge vlan show dev "$1" | tail -n +2 | sed "s/^$1//" | awk 'NF { $1 = $1; print }'
}

has_vlan() { port_vlans "$1" | grep -qx "$2" || fail "$1 lacks vlan \"$2\": $(port_vlans "$1" | tr '\n' ';')"; }

no_ping() {
    if in_ns "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1; then fail "$1 reaches $2 across VLANs"; return 1; fi
    return 0
}

# bridge "vlan": two containers on VLAN 100 (host-local, the gateway on
# cnibrv.100) and one on VLAN 200 in the same subnet, which must not reach them.
case_bridge_vlan() {
    local c100 c200 r1 pa pb pc p
    [ -e /opt/cni/bin/bridge ] || { echo "SKIP: no bridge applet"; return 2; }
    have host-local || fail "no host-local IPAM" || return 1
    ip netns add c-bva
    ip netns add c-bvb
    ip netns add c-bvc
    c100='{"cniVersion":"1.0.0","name":"brv100","type":"bridge","bridge":"cnibrv","isGateway":true,"vlan":100,"ipam":{"type":"host-local","dataDir":"/run/ipam-brv","ranges":[[{"subnet":"10.9.0.0/24"}]]}}'
    c200='{"cniVersion":"1.0.0","name":"brv200","type":"bridge","bridge":"cnibrv","vlan":200,"preserveDefaultVlan":false,"ipam":'"$(static_ipam 10.9.0.50/24)"'}'
    cni ADD bridge id-bva c-bva eth0 "$c100" || return 1
    r1=$OUT
    # A gateway left half-made (its peer out of the bridge, as after an ADD
    # killed half-way) is repaired by the next ADD.
    ip link set "$(ip -o link show cnibrv.100 | sed -n 's/.*cnibrv\.100@\([^:]*\):.*/\1/p')" nomaster
    cni ADD bridge id-bvb c-bvb eth0 "$c100" || return 1
    cni ADD bridge id-bvc c-bvc eth0 "$c200" || return 1
    echo "$r1" | grep -q '"name":"cnibrv.100"' || fail "ADD result lacks cnibrv.100: $r1" || return 1
    ip -d link show cnibrv | grep -q "vlan_filtering 1" || fail "cnibrv does not filter VLANs" || return 1
    ip addr show cnibrv.100 | grep -q "inet 10.9.0.1/24" || fail "gateway not on cnibrv.100: $(ip addr show cnibrv.100)" || return 1
    pa=$(host_port c-bva) pb=$(host_port c-bvb) pc=$(host_port c-bvc)
    has_vlan "$pa" "100 PVID Egress Untagged" || return 1
    has_vlan "$pb" "100 PVID Egress Untagged" || return 1
    has_vlan "$pc" "200 PVID Egress Untagged" || return 1
    # preserveDefaultVlan defaults to false, as upstream: the port leaves VLAN 1.
    if port_vlans "$pa" | grep -q '^1 '; then fail "VLAN 1 kept on $pa by default"; return 1; fi
    if port_vlans "$pc" | grep -q '^1 '; then fail "VLAN 1 kept on $pc despite preserveDefaultVlan=false"; return 1; fi
    # preserveDefaultVlan true keeps it (no longer the PVID).
    ip netns add c-bvd
    cni ADD bridge id-bvd c-bvd eth0 "$(echo "$c200" | sed 's/"preserveDefaultVlan":false/"preserveDefaultVlan":true/; s/10.9.0.50/10.9.0.51/')" || return 1
    has_vlan "$(host_port c-bvd)" "1 Egress Untagged" || return 1
    has_vlan "$(host_port c-bvd)" "200 PVID Egress Untagged" || return 1
    cni DEL bridge id-bvd c-bvd eth0 "$c200" || return 1
    ip netns del c-bvd
    cni CHECK bridge id-bva c-bva eth0 "$(with_prev "$c100" "$r1")" || return 1
    pings c-bva "$(ip -n c-bvb -4 -o addr show eth0 | sed -n 's/.*inet \([0-9.]*\).*/\1/p')" || return 1
    pings c-bvb 10.9.0.1 || return 1
    # Both ways at once: each failing ping waits a second.
    no_ping c-bvc 10.9.0.1 &
    p=$!
    no_ping c-bva 10.9.0.50 || return 1
    wait $p || return 1
    # The port taken out of its VLAN: CHECK must notice.
    /sbin/bridge vlan del dev "$pa" vid 100
    cni_fails CHECK bridge id-bva c-bva eth0 "$(with_prev "$c100" "$r1")" || return 1
    echo "$OUT" | grep -q "VLAN100" || fail "CHECK failed for another reason: $OUT" || return 1
    cni DEL bridge id-bva c-bva eth0 "$c100" || return 1
    cni DEL bridge id-bva c-bva eth0 "$c100" || return 1
    cni DEL bridge id-bvc c-bvc eth0 "$c200" || return 1
    ip netns del c-bvb
    cni DEL bridge id-bvb c-bvb eth0 "$c100" || return 1
    cni DEL bridge id-bvb - eth0 "$c100" || return 1
    for p in "$pa" "$pb" "$pc"; do
        if ip link show "$p" >/dev/null 2>&1; then fail "port $p left after DEL"; return 1; fi
    done
    [ -z "$(ls /run/ipam-brv/brv100 | grep '^10\.')" ] || fail "addresses left: $(ls /run/ipam-brv/brv100)" || return 1
    ip netns del c-bva
    ip netns del c-bvc
}

# bridge "vlanTrunk": a trunk port (VLANs 10-20 and 30 tagged) whose
# container talks VLAN 15 on a sub-interface to an access port of VLAN 15.
case_bridge_trunk() {
    local trunk access native r1 pt pa p v
    [ -e /opt/cni/bin/bridge ] || { echo "SKIP: no bridge applet"; return 2; }
    ip netns add c-bt
    ip netns add c-bt15
    # A bridge that exists without VLAN filtering gets it turned on. (Its
    # own MAC set: else it follows the lowest port MAC, and CHECK, like the
    # reference's, fails once a later port changes it.)
    ip link add cnibrt address 02:00:00:00:0b:01 type bridge
    trunk='{"cniVersion":"1.0.0","name":"brtrunk","type":"bridge","bridge":"cnibrt","vlanTrunk":[{"minID":10,"maxID":20},{"id":30}],"preserveDefaultVlan":false,"ipam":{}}'
    access='{"cniVersion":"1.0.0","name":"brt15","type":"bridge","bridge":"cnibrt","vlan":15,"ipam":'"$(static_ipam 10.15.0.2/24)"'}'
    cni ADD bridge id-bt c-bt eth0 "$trunk" || return 1
    r1=$OUT
    cni ADD bridge id-bt15 c-bt15 eth0 "$access" || return 1
    ip -d link show cnibrt | grep -q "vlan_filtering 1" || fail "cnibrt does not filter VLANs" || return 1
    pt=$(host_port c-bt) pa=$(host_port c-bt15)
    for v in 10 15 20 30; do has_vlan "$pt" "$v" || return 1; done
    # A trunk without vlan carries VLAN 1 untagged as its PVID, as upstream.
    has_vlan "$pt" "1 PVID Egress Untagged" || return 1
    [ "$(port_vlans "$pt" | wc -l)" = 13 ] || fail "trunk port VLANs: $(port_vlans "$pt" | tr '\n' ';')" || return 1
    has_vlan "$pa" "15 PVID Egress Untagged" || return 1
    cni CHECK bridge id-bt c-bt eth0 "$(with_prev "$trunk" "$r1")" || return 1
    ip -n c-bt link add link eth0 name eth0.15 type vlan id 15
    ip -n c-bt addr add 10.15.0.3/24 dev eth0.15
    ip -n c-bt link set eth0.15 up
    pings c-bt 10.15.0.2 || return 1
    # Untagged traffic from the trunk goes nowhere (no PVID, VLAN 1 removed).
    ip -n c-bt addr add 10.15.1.3/24 dev eth0
    ip -n c-bt15 addr add 10.15.1.2/24 dev eth0
    no_ping c-bt 10.15.1.2 || return 1
    /sbin/bridge vlan del dev "$pt" vid 30
    cni_fails CHECK bridge id-bt c-bt eth0 "$(with_prev "$trunk" "$r1")" || return 1
    echo "$OUT" | grep -q "trunkVLAN30" || fail "CHECK failed for another reason: $OUT" || return 1
    cni DEL bridge id-bt c-bt eth0 "$trunk" || return 1
    cni DEL bridge id-bt c-bt eth0 "$trunk" || return 1
    # vlan with vlanTrunk: the trunk's native VLAN (untagged, PVID), as upstream allows.
    native='{"cniVersion":"1.0.0","name":"brnative","type":"bridge","bridge":"cnibrt","vlan":40,"vlanTrunk":[{"id":41},{"minID":43,"maxID":44}],"ipam":{}}'
    cni ADD bridge id-btn c-bt eth0 "$native" || return 1
    r1=$OUT
    p=$(host_port c-bt)
    has_vlan "$p" "40 PVID Egress Untagged" || return 1
    for v in 41 43 44; do has_vlan "$p" "$v" || return 1; done
    [ "$(port_vlans "$p" | wc -l)" = 4 ] || fail "native+trunk port VLANs: $(port_vlans "$p" | tr '\n' ';')" || return 1
    cni CHECK bridge id-btn c-bt eth0 "$(with_prev "$native" "$r1")" || return 1
    cni DEL bridge id-btn c-bt eth0 "$native" || return 1
    ip netns del c-bt15
    cni DEL bridge id-bt15 c-bt15 eth0 "$access" || return 1
    for p in "$pt" "$pa"; do
        if ip link show "$p" >/dev/null 2>&1; then fail "port $p left after DEL"; return 1; fi
    done
    ip netns del c-bt
}

# The shipped binary's front door: every applet answers to its own name,
# with its arguments, and an IPAM applet called directly does its own job.
# (A static build whose code layout broke dispatch passed every other case:
# they reach host-local only in-process, through a main plugin.)
# state NETNS...: what a failed ADD must leave as it found it: links,
# addresses, routes of every table and rules in the host and in each netns,
# and the host-local store.
state() {
    local ns
    for ns in host "$@"; do
        set -- -n "$ns"
        [ "$ns" = host ] && set --
        echo "== $ns"
        # Carrier is left out (operstate, NO-CARRIER, linkdown): links the
        # earlier cases left behind may still be losing theirs.
        ip "$@" -br link show | awk '{ print $1, $3 }'
        ip "$@" -br addr show | awk '{ $2 = ""; print }'
        # The kernel's own per-link routes (local table, multicast) follow
        # their link, and a link-local one may appear late on a new link.
        ip "$@" -4 route show table all | grep -v 'table local' | sed 's/ linkdown//'
        ip "$@" -6 route show table all | grep -v -e 'table local' -e '^multicast ff00::' | sed 's/ linkdown//'
        ip "$@" rule show
    done
    echo "== store"
    ls -R /tmp/fault-store 2>/dev/null
}

# fault_steps NAME PLUGIN NETNS CONF: ADD through the fault-injection build
# with step 1, 2, ... failing until ADD succeeds; after each failure the
# state must be what it was before. The successful ADD is then deleted.
fault_steps() {
    local name=$1 plugin=$2 ns=$3 conf=$4 n=1
    state "$ns" > /tmp/fault.before
    while [ $n -le 40 ]; do
        if printf '%s' "$conf" | CNIBOX_FAIL_AT=$n CNI_COMMAND=ADD CNI_CONTAINERID=id-fault \
            CNI_NETNS=/run/netns/$ns CNI_IFNAME=eth0 CNI_PATH=/opt/cni/fault \
            "/opt/cni/fault/$plugin" >/tmp/fault.out 2>/tmp/fault.err; then
            echo "INFO fault-injection $name: $((n - 1)) steps, each failure cleaned up"
            cni DEL "$plugin" id-fault "$ns" eth0 "$conf" || return 1
            return 0
        fi
        grep -q "injected failure at step $n" /tmp/fault.out ||
            fail "$name: ADD at step $n failed for another reason: $(cat /tmp/fault.out)" || return 1
        state "$ns" > /tmp/fault.after
        diff /tmp/fault.before /tmp/fault.after >/tmp/fault.diff ||
            fail "$name: ADD failing at step $n left: $(grep '^[-+][^-+]' /tmp/fault.diff | tr '\n' ';')" || return 1
        n=$((n + 1))
    done
    fail "$name: ADD still failing after 40 injected failures"
}

# Fault injection for what this machine's kernel cannot run (issue 9; the
# same check as tests/fault_injection.rs, which skips these on the host):
# dummy, ipvlan, vlan, a bridge VLAN with its gateway interface, and vrf:
# every step of ADD fails in turn and leaves nothing behind.
case_fault_injection() {
    [ -x /opt/cni/fault/cnibox ] || { echo "SKIP: no fault-injection build (VMTEST_FAULT_BIN)"; return 2; }
    local ipam ipv prev
    ipam='{"type":"host-local","dataDir":"/tmp/fault-store","ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.60","rangeEnd":"10.1.0.69"}]]}'
    ip netns add c-fault
    ip -n c-fault link set lo up
    for plugin in dummy ipvlan vlan bridge; do
        # One config for all: each plugin ignores the others' keys.
        conf='{"cniVersion":"1.0.0","name":"fault-'$plugin'","type":"'$plugin'","master":"m0","vlanId":100,"mtu":1400,
            "bridge":"cnibrf","vlan":100,"isGateway":true,"preserveDefaultVlan":false,"ipam":'"$ipam"'}'
        # A first ADD and DEL make what outlives a container (the store's
        # directory), so that the failures are compared with a settled state.
        cni ADD "$plugin" id-fault c-fault eth0 "$conf" || return 1
        cni DEL "$plugin" id-fault c-fault eth0 "$conf" || return 1
        fault_steps "$plugin" "$plugin" c-fault "$conf" || return 1
    done
    # tap made by a child under an SELinux context, where SELinux is the LSM.
    if selinux_is_lsm; then
        conf='{"cniVersion":"1.0.0","name":"fault-tap","type":"tap","selinuxContext":"system_u:system_r:svirt_t:s0",
            "mtu":1400,"ipam":'"$ipam"'}'
        cni ADD tap id-fault c-fault eth0 "$conf" || return 1
        cni DEL tap id-fault c-fault eth0 "$conf" || return 1
        fault_steps tap-selinux tap c-fault "$conf" || return 1
    fi
    ipv='{"cniVersion":"1.0.0","name":"fault-vrf","type":"ipvlan","master":"m0","ipam":{"type":"static","addresses":[{"address":"10.1.0.70/24"}],"routes":[{"dst":"10.30.0.0/24","gw":"10.1.0.1"}]}}'
    cni ADD ipvlan id-fault c-fault eth0 "$ipv" || return 1
    prev=$OUT
    # The netns's first VRF makes the kernel add its l3mdev rule, which stays
    # after the VRF is gone: a VRF made by hand first settles that.
    ip -n c-fault link add settle type vrf table 9 && ip -n c-fault link del settle
    fault_steps vrf vrf c-fault "$(with_prev '{"cniVersion":"1.0.0","name":"fault-vrf","type":"vrf","vrfname":"red","table":1001}' "$prev")" || return 1
    cni DEL ipvlan id-fault c-fault eth0 "$ipv" || return 1
    ip netns del c-fault
    rm -rf /tmp/fault-store
}

case_front_door() {
    local a help conf
    for a in $(/opt/cni/bin/cnibox --list); do
        help=$(/opt/cni/bin/cnibox "$a" --help 2>&1)
        echo "$help" | grep -q -- "$a" || fail "cnibox $a --help does not describe $a: $(echo "$help" | head -n 1)" || return 1
    done
    ip netns add fd || return 1
    conf='{"cniVersion":"1.0.0","name":"fdnet","type":"host-local","ipam":{"type":"host-local","subnet":"10.9.0.0/24","dataDir":"/tmp/fd-ipam"}}'
    cni ADD host-local fd1 fd eth0 "$conf" || return 1
    echo "$OUT" | grep -q '"address":"10.9.0.2/24"' || fail "host-local ADD: $OUT" || return 1
    [ -z "$(ip -n fd -o link show type bridge)" ] || fail "host-local made a bridge" || return 1
    [ -e /tmp/fd-ipam/fdnet/10.9.0.2 ] || fail "host-local kept no reservation file" || return 1
    cni DEL host-local fd1 fd eth0 "$conf" || return 1
    [ ! -e /tmp/fd-ipam/fdnet/10.9.0.2 ] || fail "host-local DEL kept the reservation" || return 1
    ip netns del fd
}

run_case() {
    local name=$1 out rc
    shift
    if [ -n "$selected" ] && ! echo " $selected " | grep -q " $name "; then return; fi
    local t0 t1
    t0=$(cut -d' ' -f1 /proc/uptime)
    out=$("$@" 2>&1)
    rc=$?
    t1=$(cut -d' ' -f1 /proc/uptime)
    echo "INFO $name took $(echo "$t1 $t0" | awk '{printf "%.1f", $1 - $2}')s"
    if [ $rc = 0 ]; then
        echo "PASS $name"
        passed=$((passed + 1))
    elif [ $rc = 2 ]; then
        echo "SKIP $name: $(echo "$out" | tail -n 1 | sed 's/^SKIP: //')"
        skipped=$((skipped + 1))
    else
        echo "FAIL $name: $(echo "$out" | tail -n 4 | tr '\n' ' ')"
        failed=$((failed + 1))
    fi
}

selected="$*"
echo "INFO cases start at $(cut -d' ' -f1 /proc/uptime)s of uptime"
setup_world
run_case front-door case_front_door
run_case ipvlan-l2 case_ipvlan l2
run_case ipvlan-l3 case_ipvlan l3 10.1.3.2
run_case ipvlan-l3s case_ipvlan l3s 10.1.4.2
run_case ipvlan-in-container case_ipvlan_in_container
run_case ipvlan-chained case_ipvlan_chained
run_case ipvlan-parallel case_ipvlan_parallel
run_case vlan case_vlan
run_case vlan-in-container case_vlan_in_container
run_case dummy case_dummy
run_case vrf case_vrf
run_case tap-selinux case_tap_selinux
run_case macvlan case_macvlan
run_case bridge case_bridge
run_case bridge-vlan case_bridge_vlan
run_case bridge-trunk case_bridge_trunk
run_case fault-injection case_fault_injection
echo "SUMMARY passed=$passed failed=$failed skipped=$skipped"
