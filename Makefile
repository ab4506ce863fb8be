# cnibox — see README.md. `make demo` and `make test` do all set-up themselves.
CARGO ?= cargo
TARGET ?= x86_64-unknown-linux-gnu
STATIC_BIN := target/$(TARGET)/release/cnibox
DESTDIR ?= /opt/cni/bin

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
	$(CARGO) test --all-targets
	$(MAKE) vmtest

# The applets this kernel lacks (ipvlan, vlan, vrf, dummy, ...) tested in a
# qemu VM booting Debian's kernel; see vmtest/README.md.
vmtest: static
	./vmtest/run.sh $(STATIC_BIN)

unit:
	$(CARGO) test --lib

demo: deps release
	./scripts/demo.sh target/release/cnibox

install: release
	./install.sh $(DESTDIR)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
