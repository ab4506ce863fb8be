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
	$(CARGO) test --all-targets

unit:
	$(CARGO) test --lib

demo: deps release
	./scripts/demo.sh target/release/cnibox

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
