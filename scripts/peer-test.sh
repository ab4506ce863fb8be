#!/bin/bash
# make peer-test: the reference plugins' own black-box tests (the ginkgo
# suites that exec plugins from a directory) run against cnibox, the
# reference, or both side by side, with a per-suite table and the totals.
#
#   scripts/peer-test.sh [--against cnibox|reference|both] [--bin CNIBOX]
#                        [--reference-dir DIR] [--cnitool kit|cnibox]
#                        [--suites "loopback portmap firewall integration"] KIT
#
# KIT is a directory built outside this repository from the reference's
# source (README, "Peer tests"): KIT/bin/<suite>.test (`go test -c` of each
# package in GOPATH mode), KIT/bin/cnitool (the reference's, optional),
# KIT/gopath (the GOPATH tree they came from: the suites build their echo
# helpers from it at run time) and KIT/MANIFEST (what the kit is made of).
# Nothing here changes what a test asserts; each suite runs as the reference
# runs it, with the plugin directory under test on PATH (loopback, portmap,
# firewall) or as ../bin of the working directory (integration, with its
# testdata beside it). Needs root: the suites make their own namespaces.
set -euo pipefail

usage() { sed -n '6,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

against=cnibox
bin=""
refdir=/usr/lib/cni
cnitool=kit
suites="loopback portmap firewall integration"
kit=""
while [ $# -gt 0 ]; do
    case "$1" in
        --against) against=$2; shift ;;
        --bin) bin=$2; shift ;;
        --reference-dir) refdir=$2; shift ;;
        --cnitool) cnitool=$2; shift ;;
        --suites) suites=$2; shift ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) kit=$1 ;;
    esac
    shift
done
[ -n "$kit" ] || usage
case $against in cnibox|reference|both) ;; *) usage ;; esac
case $cnitool in kit|cnibox) ;; *) usage ;; esac
[ "$(id -u)" = 0 ] || { echo "peer-test: needs root (network namespaces)" >&2; exit 1; }
kit=$(realpath "$kit")
[ -d "$kit/gopath/src/github.com/containernetworking/plugins" ] ||
    { echo "peer-test: $kit is not a peer-test kit (no gopath/src/github.com/containernetworking/plugins)" >&2; exit 1; }
for s in $suites; do
    [ -x "$kit/bin/$s.test" ] || { echo "peer-test: no $kit/bin/$s.test" >&2; exit 1; }
done
here=$(cd "$(dirname "$0")/.." && pwd)
if [ "$against" != reference ]; then
    bin=${bin:-$here/target/x86_64-unknown-linux-gnu/release/cnibox}
    [ -x "$bin" ] || { echo "peer-test: no cnibox at $bin (make static)" >&2; exit 1; }
fi
if [ "$against" != cnibox ]; then
    [ -x "$refdir/loopback" ] || { echo "peer-test: no reference plugins in $refdir (scripts/deps.sh installs them)" >&2; exit 1; }
fi

# What the suites exec besides the plugins: go (gexec.Build of their echo
# server and client), ping (firewall), iptables (portmap), ip.
missing=""
for c in go:golang-go ping:iputils-ping iptables:iptables ip:iproute2; do
    command -v "${c%%:*}" >/dev/null || missing="$missing ${c#*:}"
done
if [ -n "$missing" ]; then
    echo "peer-test: installing$missing" >&2
    apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Specs each side is known to fail, with the reason; any other failure is
# a regression and makes the run exit 1.
declare -A expected=(
    # cnibox serves a portmap config without `backend` with nftables (README):
    # these four also read the reference's iptables chain CNI-DN-<hash>.
    ["cnibox|portmap integration tests Creating an interface in a namespace with the ptp plugin [It] [0.3.0] forwards a TCP port on ipv4"]="reads iptables chain CNI-DN-<hash>"
    ["cnibox|portmap integration tests Creating an interface in a namespace with the ptp plugin [It] [0.3.1] forwards a TCP port on ipv4"]="reads iptables chain CNI-DN-<hash>"
    ["cnibox|portmap integration tests Creating an interface in a namespace with the ptp plugin [It] [0.4.0] forwards a TCP port on ipv4"]="reads iptables chain CNI-DN-<hash>"
    ["cnibox|portmap integration tests Creating an interface in a namespace with the ptp plugin [It] [1.0.0] forwards a TCP port on ipv4"]="reads iptables chain CNI-DN-<hash>"
    # Debian's reference 1.1.1 predates spec 1.1.0 and ingressPolicy "isolated".
    ["reference|Loopback when given a network namespace [It] [1.1.0] sets the lo device to UP"]="no spec 1.1.0 before plugins 1.6"
    ["reference|Loopback when given a network namespace [It] [1.1.0] sets the lo device to DOWN"]="no spec 1.1.0 before plugins 1.6"
    ["reference|firewall integration tests (ingressPolicy: same-bridge) Testing with ingress-policy 'isolated [BeforeEach] when testing connectivity should prevent communication within foo network"]="no ingressPolicy isolated before plugins 1.7"
    ["reference|firewall integration tests (ingressPolicy: same-bridge) Testing with ingress-policy 'isolated [BeforeEach] when testing connectivity should prevent communication between foo and bar networks"]="no ingressPolicy isolated before plugins 1.7"
)

logroot=${PEER_LOG_DIR:-$here/target/peer-test}
work=$(mktemp -d /tmp/cnibox-peer.XXXXXX)
trap 'rm -rf "$work"' EXIT
export GOPATH=$kit/gopath GO111MODULE=off GOFLAGS="" GOCACHE=$work/gocache
src=$GOPATH/src/github.com/containernetworking/plugins
[ -f "$kit/MANIFEST" ] && sed 's/^/kit: /' "$kit/MANIFEST"

declare -A ran passed failed failures
# The reference's testutils namespaces (cnitest-*) now present.
cnitest_ns() {
    local f
    for f in /run/netns/cnitest-*; do
        [ -e "$f" ] || continue
        echo "${f##*/}"
    done | sort
}
# run_suite SIDE PLUGIN_DIR SUITE
run_suite() {
    local side=$1 plugins=$2 suite=$3 dir focus=() cwd path tools log rc
    case $suite in
        loopback) dir=plugins/main/loopback ;;
        portmap) dir=plugins/meta/portmap; focus=(-ginkgo.focus-file=portmap_integ_test.go) ;;
        firewall) dir=plugins/meta/firewall; focus=(-ginkgo.focus-file=firewall_integ_test.go) ;;
        integration) dir=integration ;;
        *) echo "peer-test: unknown suite $suite" >&2; exit 2 ;;
    esac
    path=$plugins:$PATH
    cwd=$src/$dir
    if [ "$suite" = integration ]; then
        # It takes plugins from ../bin and configs from ./testdata, and
        # cnitool from PATH (the plugins are not on it).
        cwd=$work/$side/integration
        mkdir -p "$cwd"
        cp -a "$src/integration/testdata" "$cwd/"
        ln -sfn "$plugins" "$work/$side/bin"
        tools=$work/$side/tools
        mkdir -p "$tools"
        if [ "$cnitool" = kit ] && [ -x "$kit/bin/cnitool" ]; then
            ln -sf "$kit/bin/cnitool" "$tools/cnitool"
        else
            ln -sf "$(realpath "${bin:-$here/target/x86_64-unknown-linux-gnu/release/cnibox}")" "$tools/cnitool"
        fi
        path=$tools:$PATH
    fi
    log=$logroot/$side/$suite.log
    mkdir -p "$(dirname "$log")"
    local before
    before=$(cnitest_ns)
    echo "peer-test: $side: $suite ..." >&2
    rc=0
    (cd "$cwd" && PATH=$path timeout 1200 "$kit/bin/$suite.test" -ginkgo.no-color -ginkgo.v "${focus[@]}") >"$log" 2>&1 || rc=$?
    # Those the suite left: the portmap UDP specs never unmount their second
    # container namespace (4 a run, with either implementation).
    local n leaked=0
    for n in $(comm -13 <(echo "$before") <(cnitest_ns)); do
        umount "/run/netns/$n" 2>/dev/null || true
        rm -f "/run/netns/$n" && leaked=$((leaked + 1))
    done
    [ "$leaked" = 0 ] || echo "peer-test: $side: $suite left $leaked cnitest-* namespaces (removed)" >&2
    local summary
    summary=$(grep -aE '^(SUCCESS|FAIL)! -- [0-9]+ Passed' "$log" | tail -1 || true)
    if [ -z "$summary" ]; then
        ran[$side|$suite]=0 passed[$side|$suite]=0 failed[$side|$suite]=0
        failures[$side|$suite]="(the suite did not run to its summary, exit $rc: see $log)"
        return
    fi
    passed[$side|$suite]=$(sed -E 's/.* ([0-9]+) Passed.*/\1/' <<<"$summary")
    failed[$side|$suite]=$(sed -E 's/.* ([0-9]+) Failed.*/\1/' <<<"$summary")
    ran[$side|$suite]=$((passed[$side|$suite] + failed[$side|$suite]))
    failures[$side|$suite]=$(sed -n '/^Summarizing [0-9]* Failure/,/^Ran /p' "$log" |
        grep -a '^  \[FAIL\] ' | sed 's/^  \[FAIL\] //' || true)
}

sides=()
case $against in
    cnibox) sides=(cnibox) ;;
    reference) sides=(reference) ;;
    both) sides=(reference cnibox) ;;
esac
for side in "${sides[@]}"; do
    if [ "$side" = cnibox ]; then
        "$here/install.sh" --bin "$bin" "$work/cnibox-plugins" >/dev/null
        dir=$work/cnibox-plugins
    else
        dir=$refdir
    fi
    for s in $suites; do run_suite "$side" "$dir" "$s"; done
done

# The table, then every failure with whether it is expected.
status=0
printf '\n%-12s' suite
for side in "${sides[@]}"; do printf ' %16s' "$side"; done
printf '\n'
declare -A tp tr
for s in $suites; do
    printf '%-12s' "$s"
    for side in "${sides[@]}"; do
        printf ' %16s' "${passed[$side|$s]}/${ran[$side|$s]} passed"
        tp[$side]=$((${tp[$side]:-0} + passed[$side|$s]))
        tr[$side]=$((${tr[$side]:-0} + ran[$side|$s]))
    done
    printf '\n'
done
printf '%-12s' total
for side in "${sides[@]}"; do printf ' %16s' "${tp[$side]}/${tr[$side]} passed"; done
printf '\n'
for side in "${sides[@]}"; do
    for s in $suites; do
        [ -n "${failures[$side|$s]}" ] || continue
        while IFS= read -r spec; do
            if [ -n "${expected[$side|$spec]:-}" ]; then
                echo "$side: $s: expected failure (${expected[$side|$spec]}): $spec"
            else
                echo "$side: $s: FAILED: $spec"
                status=1
            fi
        done <<<"${failures[$side|$s]}"
    done
    [ "${tr[$side]}" -gt 0 ] || status=1
done
echo "logs: $logroot"
for side in "${sides[@]}"; do
    echo "peer-test $side: ${tp[$side]} passed, $((tr[$side] - tp[$side])) failed"
done
exit $status
