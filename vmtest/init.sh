#!/bin/busybox sh
# PID 1 of the test VM: mounts, loads the modules, runs the cases, powers off.
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
# devtmpfs lacks these links; nft -f - opens /dev/stdin.
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mkdir -p /run/netns
failed_mods=""
while read -r m; do
    insmod "/lib/modules/$m.ko" 2>/tmp/insmod.err || failed_mods="$failed_mods $m"
done < /lib/modules/order
[ -z "$failed_mods" ] || echo "INFO modules that failed to load:$failed_mods"
ip link set lo up
sh /cases.sh $(cat /etc/vmtest-cases)
echo o > /proc/sysrq-trigger 2>/dev/null
poweroff -f
