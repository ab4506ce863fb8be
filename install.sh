#!/bin/sh
# install.sh [--force] [--bin PATH] [--conflist FILE [--conf-dir DIR]] [DIR]
#
# Finds a built cnibox and runs `cnibox install` (src/install.rs: the one
# implementation of installing): copies it into DIR (default /opt/cni/bin)
# and links every applet name to it. Idempotent. A plugin file that is not
# already a link to cnibox is left alone (and reported, exit 1) unless
# --force is given. `cnibox install --help` says more.
set -eu

# Only --bin matters here (which binary to run); cnibox reads every argument.
bin=""
bin_next=0
for arg in "$@"; do
    if [ "$bin_next" = 1 ]; then bin=$arg; bin_next=0; continue; fi
    case "$arg" in
        --bin) bin_next=1 ;;
        --bin=*) bin=${arg#--bin=} ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
if [ -z "$bin" ]; then
    # The static build first: smaller and faster to start (make static).
    for candidate in "$here/target/x86_64-unknown-linux-gnu/release/cnibox" "$here/target/release/cnibox" "$here/cnibox"; do
        [ -x "$candidate" ] && { bin=$candidate; break; }
    done
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "install.sh: no cnibox binary found (run 'make release' or pass --bin)" >&2; exit 1; }
exec "$bin" install "$@"
