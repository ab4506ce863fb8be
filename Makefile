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
# initramfs build, and the fastest to start. Not position-independent (no
# start-up self-relocation, no 120 KB relocation table) and without the
# unwinder's lookup table (panic=abort never unwinds): smaller and faster.
STATIC_RUSTFLAGS := -C target-feature=+crt-static -C relocation-model=static -C link-arg=-Wl,--no-eh-frame-hdr
static:
	RUSTFLAGS="$(STATIC_RUSTFLAGS)" $(CARGO) build --release --target $(TARGET)

deps:
	./scripts/deps.sh

test: deps
	$(CARGO) test --all-targets --features fault-injection

unit:
	$(CARGO) test --lib

demo: deps release
	./scripts/demo.sh target/release/cnibox

# Side by side with the reference plugins; writes BENCHMARKS.md. Needs root.
bench: deps static
	cc -O2 -static -o target/noop-plugin bench/noop.c
	cc -O2 -static -o target/maxrss bench/maxrss.c
	rm -rf target/bench-bin
	./install.sh --bin $(STATIC_BIN) target/bench-bin >/dev/null
	$(CARGO) bench --bench compare -- $(CURDIR)/target/bench-bin /usr/lib/cni $(CURDIR)/target/noop-plugin $(CURDIR)/target/maxrss BENCHMARKS.md

install: release
	./install.sh $(DESTDIR)

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
