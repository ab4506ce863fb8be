#!/bin/sh
# Boots Debian's kernel under qemu (TCG) with an initramfs built here, runs
# vmtest/cases.sh inside and reports each case. Exit status: 0 when every
# case passed; 1 on a failure, a missing summary line or a timeout.
#
# usage: vmtest/run.sh [STATIC_CNIBOX]   (default: the `make static` binary)
# env:   VMTEST_TIMEOUT (seconds, default 300), VMTEST_KEEP=1 keeps the work
#        directory, VMTEST_CASES="ipvlan-l2 vrf" runs only those cases,
#        VMTEST_KERNEL / VMTEST_MODULES override the kernel and its modules,
#        VMTEST_REF="vrf vlan" runs those plugins from /usr/lib/cni instead,
#        VMTEST_FAULT_BIN=PATH adds a fault-injection build for that case.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../target/x86_64-unknown-linux-gnu/release/cnibox}
timeout_s=${VMTEST_TIMEOUT:-300}

die() { echo "vmtest: $*" >&2; exit 1; }

[ -x "$bin" ] || die "no cnibox binary at $bin (run: make static)"
if ldd "$bin" 2>/dev/null | grep -q '=>'; then
    die "$bin is dynamically linked; build it with: make static"
fi
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (make deps)"
[ -x /bin/busybox ] || die "/bin/busybox missing (busybox-static; make deps)"

kernel=${VMTEST_KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
[ -r "$kernel" ] || die "no kernel in /boot (linux-image-amd64; make deps)"
kver=${kernel#*/vmlinuz-}
moddir=${VMTEST_MODULES:-/lib/modules/$kver}
[ -r "$moddir/modules.dep" ] || die "no modules.dep in $moddir"

work=$(mktemp -d /tmp/cnibox-vmtest.XXXXXX)
[ "${VMTEST_KEEP:-}" = 1 ] || trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/bin" "$root/sbin" "$root/proc" "$root/sys" "$root/dev" "$root/run" "$root/tmp" \
    "$root/etc" "$root/opt/cni/bin" "$root/opt/cni/ref" "$root/lib/modules" "$root/var/lib/cni"

# Copies an executable and the shared libraries it needs (from ldd).
copy_with_libs() {
    src=$1 dst=$2
    cp -L "$src" "$root$dst"
    ldd "$src" 2>/dev/null | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p' |
        while read -r lib; do
            mkdir -p "$root$(dirname "$lib")"
            [ -e "$root$lib" ] || cp -L "$lib" "$root$lib"
        done
}

cp /bin/busybox "$root/bin/busybox"
# iproute2 for netns, veth, vlan and vrf set-up (busybox ip cannot create links).
copy_with_libs "$(command -v ip)" /sbin/ip
# iproute2's bridge, for the bridge VLAN cases (bridge vlan show).
copy_with_libs "$(command -v bridge)" /sbin/bridge
# nft for the plugins that program nftables (bridge ipMasq, portmap, ...).
if command -v nft >/dev/null; then copy_with_libs "$(command -v nft)" /sbin/nft; fi

cp "$bin" "$root/opt/cni/bin/cnibox"
applets=$("$bin" --list)
for a in $applets; do ln -s cnibox "$root/opt/cni/bin/$a"; done
# VMTEST_FAULT_BIN: a static build with the fault-injection feature, for the
# fault-injection case (installed beside the normal one, never instead of it).
if [ -n "${VMTEST_FAULT_BIN:-}" ]; then
    [ -x "$VMTEST_FAULT_BIN" ] || die "no fault-injection build at $VMTEST_FAULT_BIN"
    mkdir -p "$root/opt/cni/fault"
    cp "$VMTEST_FAULT_BIN" "$root/opt/cni/fault/cnibox"
    for a in $applets; do ln -s cnibox "$root/opt/cni/fault/$a"; done
fi
# VMTEST_REF="ipvlan vrf": run those plugins from the reference suite
# instead (to check the cases themselves against the reference behaviour).
for ref in ${VMTEST_REF:-}; do
    [ -x "/usr/lib/cni/$ref" ] || die "no reference plugin /usr/lib/cni/$ref"
    rm -f "$root/opt/cni/bin/$ref"
    copy_with_libs "/usr/lib/cni/$ref" "/opt/cni/bin/$ref"
done
# IPAM fallbacks from the reference plugins, for applets cnibox lacks yet;
# CNI_PATH lists /opt/cni/bin first, so cnibox's own always win.
for ref in host-local static; do
    if ! echo "$applets" | grep -qx "$ref" && [ -x "/usr/lib/cni/$ref" ]; then
        copy_with_libs "/usr/lib/cni/$ref" "/opt/cni/ref/$ref"
    fi
done

# Kernel modules and everything they depend on, in load order.
modules="veth bridge macvlan ipvlan 8021q vrf dummy tun nf_tables nft_chain_nat nft_masq nft_nat nft_ct nft_compat"
order=$work/modules.order
: > "$order"
# A module name as a modules.dep pattern ('-' and '_' are the same).
module_re() { echo "$1" | sed 's/[-_]/[-_]/g'; }
# The module behind an alias (e.g. crc32c), preferring the generic C one
# (the VM's CPU may lack what the optimised ones need).
resolve_alias() {
    local all
    all=$(awk -v n="$1" '$1 == "alias" && $2 == n { print $3 }' "$moddir/modules.alias")
    echo "$all" | grep generic | head -n 1 | grep . || echo "$all" | head -n 1
}
add_module() {
    local path dep pre re
    re=$(module_re "$1")
    path=$(grep -E "(^|/)$re\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -n 1 | cut -d: -f1)
    if [ -z "$path" ]; then
        grep -qE "/$re\.ko" "$moddir/modules.builtin" 2>/dev/null && return 0
        pre=$(resolve_alias "$1")
        [ -n "$pre" ] || die "module $1 not found"
        add_module "$pre"
        return 0
    fi
    grep -qx "$path" "$order" && return 0
    # softdep "pre:" modules first (libcrc32c needs a crc32c implementation).
    for pre in $(sed -n "s/^softdep $re pre: *//p" "$moddir/modules.softdep" | sed 's/ post:.*//'); do
        add_module "$pre"
    done
    for dep in $(grep -E "^$path:" "$moddir/modules.dep" | cut -d: -f2); do
        add_module "$(basename "$dep" | sed 's/\.ko.*//')"
    done
    grep -qx "$path" "$order" || echo "$path" >> "$order"
}
for m in $modules; do add_module "$m"; done
while read -r path; do
    name=$(basename "$path" | sed 's/\.ko.*//')
    case $path in
        *.ko.xz) xz -dc "$moddir/$path" > "$root/lib/modules/$name.ko" ;;
        *.ko.zst) zstd -qdc "$moddir/$path" > "$root/lib/modules/$name.ko" ;;
        *.ko.gz) gzip -dc "$moddir/$path" > "$root/lib/modules/$name.ko" ;;
        *) cp "$moddir/$path" "$root/lib/modules/$name.ko" ;;
    esac
    echo "$name" >> "$root/lib/modules/order"
done < "$order"

cp "$here/init.sh" "$root/init"
cp "$here/cases.sh" "$root/cases.sh"
chmod +x "$root/init" "$root/cases.sh"
echo "${VMTEST_CASES:-}" > "$root/etc/vmtest-cases"

(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$work/initramfs.gz"

log=$work/console.log
echo "vmtest: booting $kernel ($(du -h "$work/initramfs.gz" | cut -f1) initramfs)" >&2
set +e
timeout "$timeout_s" qemu-system-x86_64 -accel tcg -m 384M -smp 1 -nographic -no-reboot -nic none \
    -kernel "$kernel" -initrd "$work/initramfs.gz" \
    -append "console=ttyS0 quiet panic=-1 loglevel=3 security=selinux" </dev/null > "$log" 2>&1
rc=$?
set -e
tr -d '\r' < "$log" | grep -E '^(PASS|FAIL|SKIP|INFO) ' || true
if [ "$rc" = 124 ]; then
    echo "vmtest: TIMEOUT after ${timeout_s}s; console tail:" >&2
    tr -d '\r' < "$log" | tail -n 40 >&2
    exit 1
fi
summary=$(tr -d '\r' < "$log" | grep -E '^SUMMARY ' | tail -n 1)
if [ -z "$summary" ]; then
    echo "vmtest: no summary line (qemu exit $rc); console tail:" >&2
    tr -d '\r' < "$log" | tail -n 40 >&2
    exit 1
fi
echo "$summary"
# The plain closing line CI readers understand: "vmtest: N passed, N failed".
passed=$(echo "$summary" | sed -n 's/.*passed=\([0-9]*\).*/\1/p')
failed=$(echo "$summary" | sed -n 's/.*failed=\([0-9]*\).*/\1/p')
echo "vmtest: ${passed:-0} passed, ${failed:-0} failed"
case $summary in
    *" failed=0"*) exit 0 ;;
    *) [ "${VMTEST_VERBOSE:-}" = 1 ] && tr -d '\r' < "$log" >&2; exit 1 ;;
esac
