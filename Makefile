# cnibox — see README.md. `make demo` and `make test` do all set-up themselves.
CARGO ?= cargo
TARGET ?= x86_64-unknown-linux-gnu
STATIC_BIN := target/$(TARGET)/release/cnibox
DESTDIR ?= /opt/cni/bin
SYSTEMD_DIR ?= /etc/systemd/system

.PHONY: all build release static test unit integration vmtest bench demo install lint deps clean

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# One binary with no shared-library dependency (glibc, crt-static): the
# initramfs build, and the fastest to start.
static:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --target $(TARGET)

deps:
	./scripts/deps.sh

test: deps
	$(CARGO) check --benches
	$(CARGO) test --lib --bins --tests --features fault-injection
	$(MAKE) --no-print-directory vmtest

# The applets this kernel lacks (ipvlan, vlan, vrf, dummy, ...) tested in a
# qemu VM booting Debian's kernel; see vmtest/README.md.
vmtest: static
	./vmtest/run.sh $(STATIC_BIN)

unit:
	$(CARGO) test --lib

demo: deps release
	./scripts/demo.sh target/release/cnibox

# Side by side with the reference plugins; writes BENCHMARKS.md. Needs root.
bench: deps static
	cc -O2 -static -o target/noop-plugin bench/noop.c
	rm -rf target/bench-bin
	./install.sh --bin $(STATIC_BIN) target/bench-bin >/dev/null
	$(CARGO) bench --bench compare -- $(CURDIR)/target/bench-bin /usr/lib/cni $(CURDIR)/target/noop-plugin BENCHMARKS.md

install: release
	./install.sh $(DESTDIR)
	install -d $(SYSTEMD_DIR)
	sed 's|/opt/cni/bin|$(DESTDIR)|g' contrib/systemd/cnibox-dhcp.service > $(SYSTEMD_DIR)/cnibox-dhcp.service
	install -m 0644 contrib/systemd/cnibox-dhcp.socket $(SYSTEMD_DIR)/cnibox-dhcp.socket

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
