#!/bin/sh
# install.sh [--force] [--bin PATH] [DIR]
#
# Copies cnibox into DIR (default /opt/cni/bin) and links every applet name
# from `cnibox --list` to it. Idempotent. A plugin file that is not already
# a link to cnibox is left alone (and reported) unless --force is given.
set -eu

usage() { echo "usage: $0 [--force] [--bin PATH] [DIR]" >&2; exit 2; }

force=0
bin=""
dir=/opt/cni/bin
while [ $# -gt 0 ]; do
    case "$1" in
        --force) force=1 ;;
        --bin) [ $# -ge 2 ] || usage; bin=$2; shift ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) dir=$1 ;;
    esac
    shift
done

here=$(cd "$(dirname "$0")" && pwd)
if [ -z "$bin" ]; then
    # The static build first: smaller and faster to start (make static).
    for candidate in "$here/target/x86_64-unknown-linux-gnu/release/cnibox" "$here/target/release/cnibox" "$here/cnibox"; do
        [ -x "$candidate" ] && { bin=$candidate; break; }
    done
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "install.sh: no cnibox binary found (run 'make release' or pass --bin)" >&2; exit 1; }

mkdir -p "$dir"
# Copy beside the target and rename, so a running node never sees half a file.
tmp="$dir/.cnibox.$$"
cp "$bin" "$tmp"
chmod 0755 "$tmp"
if [ -f "$dir/cnibox" ] && cmp -s "$tmp" "$dir/cnibox"; then
    rm -f "$tmp"
    echo "cnibox: $dir/cnibox is up to date"
else
    mv -f "$tmp" "$dir/cnibox"
    echo "cnibox: installed $dir/cnibox"
fi

linked=0; kept=0; skipped=0
for name in $("$dir/cnibox" --list); do
    target="$dir/$name"
    if [ -L "$target" ] && [ "$(readlink "$target")" = cnibox ]; then
        kept=$((kept + 1))
        continue
    fi
    if [ -e "$target" ] || [ -L "$target" ]; then
        if [ "$force" != 1 ]; then
            echo "cnibox: kept existing $target (not cnibox; use --force to replace it)" >&2
            skipped=$((skipped + 1))
            continue
        fi
        echo "cnibox: replacing $target"
    fi
    ln -sfn cnibox "$target"
    linked=$((linked + 1))
done
echo "cnibox: $linked links created, $kept already in place, $skipped skipped, in $dir"
[ "$skipped" = 0 ]
