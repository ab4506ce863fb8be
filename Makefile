# cnibox — see README.md. `make demo` and `make test` do all set-up themselves.
CARGO ?= cargo
TARGET ?= x86_64-unknown-linux-gnu
STATIC_BIN := target/$(TARGET)/release/cnibox
DESTDIR ?= /opt/cni/bin
SYSTEMD_DIR ?= /etc/systemd/system
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# The installer image's name (make image, make manifest).
IMAGE ?= localhost/cnibox:$(VERSION)

.PHONY: all build release static static-fault test unit integration vmtest image image-test manifest bench demo install lint deps clean fuzz soak peer-test

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# One binary with no shared-library dependency (glibc, crt-static): the
# initramfs build, and the fastest to start. Not position-independent (no
# start-up self-relocation, no 120 KB relocation table), without the
# unwinder's tables (panic=abort never unwinds), and with each applet's code
# grouped so that a plugin call faults in only its own (scripts/static-layout.ld
# says why both are safe): smaller, faster, and less memory per call.
# The layout matches functions by module path, so a moved module silently
# loses it: the linker writes a map (cnibox.map beside the binary) and
# scripts/check-layout.sh fails the build when a pattern matches nothing or
# a module's code is outside its section. $(call STATIC_RUSTFLAGS,BIN) writes
# the map to BIN.map.
STATIC_RUSTFLAGS = -C target-feature=+crt-static -C relocation-model=static -C link-arg=-Wl,--no-eh-frame-hdr \
	-C link-arg=-Wl,-T,$(CURDIR)/scripts/static-layout.ld -C link-arg=-Wl,-Map,$(CURDIR)/$(1).map
static:
	@# Cargo does not know the linker script: relink when it changed.
	@if [ scripts/static-layout.ld -nt $(STATIC_BIN) ]; then touch src/main.rs; fi
	RUSTFLAGS="$(call STATIC_RUSTFLAGS,$(STATIC_BIN))" $(CARGO) build --release --target $(TARGET)
	./scripts/check-layout.sh $(STATIC_BIN).map

deps:
	./scripts/deps.sh

# Run as root (CI does): built and run without root, the tests that need
# root are listed as ignored (build.rs). vmtest builds `static`, which checks
# the static build's code layout.
test: deps
	$(CARGO) check --benches
	$(CARGO) test --lib --bins --tests --features fault-injection
	$(MAKE) --no-print-directory vmtest
	$(MAKE) --no-print-directory image-test

# The applets this kernel lacks (ipvlan, vlan, vrf, dummy, ...) tested in a
# qemu VM booting Debian's kernel; see vmtest/README.md.
vmtest: static static-fault
	VMTEST_FAULT_BIN=$(FAULT_BIN) ./vmtest/run.sh $(STATIC_BIN)

# The static build with the test-only fault-injection feature, in its own
# target directory (never installed): vmtest's fault-injection case.
FAULT_BIN := target/fault/$(TARGET)/release/cnibox
static-fault:
	@if [ scripts/static-layout.ld -nt $(FAULT_BIN) ]; then touch src/main.rs; fi
	RUSTFLAGS="$(call STATIC_RUSTFLAGS,$(FAULT_BIN))" $(CARGO) build --release --target $(TARGET) --features fault-injection --target-dir target/fault
	./scripts/check-layout.sh $(FAULT_BIN).map

# The installer image (Containerfile: FROM scratch, the static binary only),
# with podman, else docker; tagged $(IMAGE) and localhost/cnibox:latest.
image: static
	./scripts/image.sh build $(IMAGE)

# Builds the image and runs it against temporary directories (install,
# idempotence, foreign files, --conflist, pause); says SKIPPED where neither
# podman nor docker works.
image-test: static
	./scripts/image.sh test $(IMAGE)

# The DaemonSet manifests (contrib/kubernetes) with IMAGE as their image, in
# target/kubernetes/:
#   make manifest IMAGE=registry.example/cnibox:0.1.0
#   kubectl apply -f target/kubernetes/cnibox.yaml
manifest:
	mkdir -p target/kubernetes
	for f in cnibox.yaml cnibox-dhcp.yaml; do \
		sed 's|localhost/cnibox:latest|$(IMAGE)|g' contrib/kubernetes/$$f > target/kubernetes/$$f || exit 1; \
	done
	@echo "manifest: target/kubernetes/cnibox.yaml and cnibox-dhcp.yaml, image $(IMAGE)"

unit:
	$(CARGO) test --lib

# Long-running checks, not part of `make test` (see README, "Fuzzing" and "Soak").
FUZZ_TARGETS ?= applet_configs cni_args dhcp_packet dhcp6_packet lenient prev_result
FUZZ_SECONDS ?= 120
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p target/work/$$t && \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t target/work/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=4096 || exit 1; \
	done

soak: deps
	$(CARGO) test --features fault-injection --test soak -- --ignored --nocapture

demo: deps release
	./scripts/demo.sh target/release/cnibox

# Side by side with the reference plugins; writes BENCHMARKS.md. Needs root.
bench: deps static
	cc -O2 -static -o target/noop-plugin bench/noop.c
	cc -O2 -static -o target/maxrss bench/maxrss.c
	rm -rf target/bench-bin
	$(STATIC_BIN) install target/bench-bin >/dev/null
	$(CARGO) bench --bench compare -- $(CURDIR)/target/bench-bin /usr/lib/cni $(CURDIR)/target/noop-plugin $(CURDIR)/target/maxrss BENCHMARKS.md

# The reference plugins' own black-box suites (loopback, portmap and firewall
# integration, integration/ with cnitool) against the static cnibox, the
# reference (PEER_AGAINST=reference) or both; not part of `make test`: it
# needs a kit built from the reference's Go source (README, "Peer tests").
PEER_AGAINST ?= cnibox
peer-test: static
	@test -n "$(PEER_KIT)" || { echo "make peer-test PEER_KIT=DIR (README, \"Peer tests\")" >&2; exit 2; }
	./scripts/peer-test.sh --against $(PEER_AGAINST) --bin $(STATIC_BIN) $(PEER_KIT)

# The static build: 1.2 MB smaller than the PIE one (no relocation tables)
# and the fastest to start, which every plugin call pays.
install: static
	$(STATIC_BIN) install $(DESTDIR)
	install -d $(SYSTEMD_DIR)
	sed 's|/opt/cni/bin|$(DESTDIR)|g' contrib/systemd/cnibox-dhcp.service > $(SYSTEMD_DIR)/cnibox-dhcp.service
	install -m 0644 contrib/systemd/cnibox-dhcp.socket $(SYSTEMD_DIR)/cnibox-dhcp.socket

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
