#!/bin/sh
# Usage: scripts/check-layout.sh MAP
#
# Fails when scripts/static-layout.ld no longer matches the code. The layout
# picks functions by their mangled module paths, so a moved or renamed
# module silently falls back to the shared code: every plugin call then
# faults in more memory, and nothing else shows it. From the linker map of
# the static build (`make static` links with -Map and runs this) it checks:
#
#  1. every input-section line of the .ld's three code sections (each
#     `file(sections)` pattern, e.g. `*(.text.*applets6bridge* ...)`)
#     places at least one input section;
#  2. every module of src/applets/ is in the table below, every name in the
#     table is a module of src/ or has code in the map, and every function
#     of a module (or generic function instantiated for one) is in that
#     module's output section.
#
# The map must be lld's (rustc links with rust-lld on x86_64 Linux); GNU
# ld's has another format, and the script says so rather than pass.
# /DISCARD/ is not checked: discarded sections are not in the map.
set -eu

map=${1:?usage: $0 MAP}
dir=$(dirname "$0")
ld=$dir/static-layout.ld
src=$dir/../src
[ -r "$map" ] || { echo "check-layout: no map $map (make static writes it when it links: touch src/main.rs to relink)" >&2; exit 1; }
head -n 1 "$map" | grep -q '^ *VMA *LMA *Size *Align *Out *In *Symbol$' ||
	{ echo "check-layout: $map is not an lld map" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Where each part of cnibox belongs. A name covers its submodules and
# functions unless a longer name says otherwise; names are paths within the
# cnibox crate. A module added under src/applets/ needs a line here (and,
# unless it is shared code, a pattern in the .ld).
cat >"$tmp/table" <<'EOF'
applets                         .text
applets::bandwidth              .text.applets
applets::bridge                 .text.applets
applets::cnitool                .text.rare
applets::dhcp                   .text.applets
applets::dhcp::daemon           .text.rare
applets::dummy                  .text.applets
applets::firewall               .text.applets
applets::flannel                .text.applets
applets::host_device            .text.applets
applets::host_local             .text.applets
applets::ipvlan                 .text.applets
applets::loopback               .text.applets
applets::macvlan                .text.applets
applets::portmap                .text.applets
applets::ptp                    .text.applets
applets::sbr                    .text.applets
applets::shared                 .text
applets::shared::iface_config   .text
applets::shared::link_plugin    .text
applets::shared::masquerade     .text.applets
applets::shared::nft_attachment .text.applets
applets::shared::result_check   .text
applets::shared::veth_plugin    .text
applets::shared::veth_plugin::gc .text.occasional
applets::static_ipam            .text.applets
applets::tap                    .text.applets
applets::tuning                 .text.applets
applets::vlan                   .text.applets
applets::vrf                    .text.applets
cni::gc                         .text.occasional
cni::runtime                    .text.rare
doctor                          .text.rare
install                         .text.rare
netlink::brport                 .text.applets
netlink::conntrack              .text.applets
netlink::moved_link             .text.applets
netlink::tc                     .text.applets
nft                             .text.applets
util::atomic_file               .text.rare
EOF

# The crate's modules, from the source tree: src/a/b.rs and src/a/b/mod.rs
# are a::b.
(cd "$src" && find . -name '*.rs') | sed -e 's|^\./||' -e 's|\.rs$||' -e 's|/mod$||' -e 's|/|::|g' |
	grep -v -x -e lib -e main >"$tmp/modules"

awk -v table="$tmp/table" -v modules="$tmp/modules" -v ld="$ld" -v map="$map" '
# A linker-script glob as an anchored regex (the .ld uses * and ? only).
function glob_re(g,    r, i, c) {
	r = "^"
	for (i = 1; i <= length(g); i++) {
		c = substr(g, i, 1)
		if (c == "*") r = r ".*"
		else if (c == "?") r = r "."
		else if (c ~ /[A-Za-z0-9_]/) r = r c
		else r = r "[" c "]"
	}
	return r "$"
}

# The longest name in the table that is a prefix of path (components
# joined by ::), or "".
function resolve(path,    n, c, k, p, i) {
	n = split(path, c, "::")
	for (k = n; k >= 1; k--) {
		p = c[1]
		for (i = 2; i <= k; i++) p = p "::" c[i]
		if (p in want) return p
	}
	return ""
}

# Adds to found[] the table names of the cnibox paths in a section name:
# legacy or v0 mangling (6cnibox7applets6bridge...) and paths inside
# generic names (cnibox..applets..bridge..).
function mentions(name,    s, i, path, n, rest) {
	s = name
	while ((i = index(s, "6cnibox")) > 0) {
		rest = substr(s, i + 7)
		if (i == 1 || substr(s, i - 1, 1) !~ /[0-9]/) {
			path = ""
			while (match(rest, /^[0-9]+/)) {
				n = substr(rest, 1, RLENGTH) + 0
				path = path (path == "" ? "" : "::") substr(rest, RLENGTH + 1, n)
				rest = substr(rest, RLENGTH + 1 + n)
			}
			if (path != "" && (path = resolve(path)) != "") found[path] = 1
		}
		s = substr(s, i + 7)
	}
	s = name
	while ((i = index(s, "cnibox..")) > 0) {
		rest = substr(s, i + 6)
		if (i == 1 || substr(s, i - 1, 1) !~ /[A-Za-z0-9_]/) {
			if (match(rest, /^(\.\.[A-Za-z0-9_]+)+/)) {
				path = substr(rest, 3, RLENGTH - 2)
				gsub(/\.\./, "::", path)
				if ((path = resolve(path)) != "") found[path] = 1
			}
		}
		s = substr(s, i + 8)
	}
}

function fail(msg) { print "check-layout: " msg > "/dev/stderr"; bad++ }

BEGIN {
	while ((getline line < table) > 0) {
		split(line, f, " ")
		want[f[1]] = f[2]
	}
	while ((getline line < modules) > 0) module[line] = 1

	# The .ld: each `file(sections)` pattern of the code output sections.
	text = ""
	while ((getline line < ld) > 0) text = text line "\n"
	gsub(/\/\*([^*]|\*+[^*\/])*\*+\//, "", text)
	nlines = split(text, lines, "\n")
	out = ""
	for (l = 1; l <= nlines; l++) {
		line = lines[l]
		if (match(line, /^[ \t]*[^ \t]+[ \t]*:[ \t]*\{/)) {
			out = line
			sub(/^[ \t]*/, "", out)
			sub(/[ \t]*:.*/, "", out)
			if (out !~ /^\.text\./) out = ""
			continue
		}
		if (line ~ /^[ \t]*\}/) { out = ""; continue }
		if (out == "") continue
		while (match(line, /[^ \t(){}]+\([^()]*\)/)) {
			st = substr(line, RSTART, RLENGTH)
			line = substr(line, RSTART + RLENGTH)
			np++
			pat_text[np] = st
			pat_out[np] = out
			fp = st
			sub(/\(.*/, "", fp)
			pat_file[np] = glob_re(fp)
			secs = st
			sub(/^[^(]*\(/, "", secs)
			sub(/\)$/, "", secs)
			pat_nsec[np] = split(secs, sg, " ")
			for (k = 1; k <= pat_nsec[np]; k++) pat_sec[np, k] = glob_re(sg[k])
		}
	}
	if (np == 0) fail("no patterns found in " ld)

	# The map: output sections start in the "Out" column, input sections
	# (file:(section)) eight columns further in; symbols are further still.
	while ((getline line < map) > 0) {
		if (!match(line, /^ *[0-9a-f]+ +[0-9a-f]+ +[0-9a-f]+ +[0-9]+ /)) continue
		size = line
		sub(/^ *[0-9a-f]+ +[0-9a-f]+ +/, "", size)
		sub(/ .*/, "", size)
		rest = substr(line, RLENGTH + 1)
		if (rest !~ /^ /) { cur = rest; continue }
		if (rest !~ /^        [^ ]/) continue
		sub(/^ +/, "", rest)
		i = 0
		for (j = length(rest) - 1; j > 0; j--) if (substr(rest, j, 2) == ":(") { i = j; break }
		if (i == 0) continue
		file = substr(rest, 1, i - 1)
		name = substr(rest, i + 2, length(rest) - i - 2)
		# An archive member is archive(member); the .ld names it archive:member.
		if (match(file, /\([^()]*\)$/))
			file = substr(file, 1, RSTART - 1) ":" substr(file, RSTART + 1, RLENGTH - 2)
		n++
		in_out[n] = cur
		in_file[n] = file
		in_name[n] = name
		in_size[n] = hex(size)
	}
	if (n == 0) fail("no input sections in " map)

	# 1. Every pattern places something in its output section.
	for (p = 1; p <= np; p++) {
		hit = 0
		for (s = 1; s <= n && !hit; s++) {
			if (in_out[s] != pat_out[p] || in_file[s] !~ pat_file[p]) continue
			for (k = 1; k <= pat_nsec[p]; k++) if (in_name[s] ~ pat_sec[p, k]) { hit = 1; break }
		}
		if (!hit) fail(pat_out[p] ": " pat_text[p] " matches nothing")
	}

	# 2a. The table and the source tree agree.
	for (m in module)
		if (m ~ /^applets::/ && (resolve(m) == "applets" || (resolve(m) == "applets::shared" && m != "applets::shared")))
			fail("module " m " is not in the table of scripts/check-layout.sh")

	# 2b. Every function is where the modules it belongs to go: if a name
	# mentions a module with a block of its own, in one of those blocks
	# (a generic function of one module instantiated for another may go to
	# either); if it mentions only shared modules, in the shared .text.
	for (s = 1; s <= n; s++) {
		if (in_name[s] !~ /^\.text\./) continue
		split("", found)
		mentions(in_name[s])
		own = ""; shared = ""; ok = 0
		for (m in found) {
			seen[m] = 1
			if (want[m] == ".text") { shared = m; continue }
			own = m
			if (want[m] == in_out[s]) ok = 1
		}
		if (own == "" && shared != "") { m = shared; ok = (in_out[s] == ".text") }
		else m = own
		if (m == "" || ok) continue
		key = m " in " in_out[s]
		if (!(key in wrong)) example[key] = in_name[s]
		wrong[key] += in_size[s]
	}
	for (key in wrong) {
		split(key, kw, " in ")
		fail(kw[1] ": " wrong[key] " bytes in " kw[2] ", want " want[kw[1]] " (e.g. " example[key] ")")
	}
	for (m in want)
		if (!(m in module) && !(m in seen))
			fail(m " (table) is no module of src/ and has no code in the map")

	if (bad) {
		print "check-layout: " bad " problem(s): fix scripts/static-layout.ld or the table in scripts/check-layout.sh" > "/dev/stderr"
		exit 1
	}
	print "check-layout: " np " patterns, " n " input sections: the layout matches"
}

function hex(h,    v, i) {
	v = 0
	for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1
	return v
}
'
