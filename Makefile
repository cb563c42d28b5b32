# callbox: `make demo` runs the demo, `make test` runs every test. Both install what is
# missing first. The cargo target dir lives outside the clone so CI stays warm.
CARGO_TARGET_DIR ?= $(HOME)/.cache/callbox-target
export CARGO_TARGET_DIR
CALLBOX := $(CARGO_TARGET_DIR)/release/callbox

.PHONY: deps build demo test lint bench aarch64 armv7 test-aarch64 deb test-deb test-board

deps:
	./scripts/install-deps.sh

build: deps
	cargo build --release

demo: build
	$(CALLBOX) demo --peers 2 --duration 20

lint: deps
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	./scripts/check-layers.sh

test: lint
	cargo test --workspace --all-targets

# The benchmark program (crates/bench, never shipped) runs the release `callbox` next to it.
bench: build
	cargo build --release -p callbox-bench
	$(CARGO_TARGET_DIR)/release/callbox-bench --iterations 300

# The aarch64 / armv7 release binary without Docker (scripts/cross-build.sh); prints its path last.
aarch64: deps
	./scripts/cross-build.sh arm64

armv7: deps
	./scripts/cross-build.sh armhf

# The aarch64 binary run here under qemu-user: version, the Pi config, a short demo in which
# media must flow (exit 1 otherwise).
test-aarch64: deps
	./scripts/test-aarch64.sh

# Debian packages (cargo-deb): amd64 from the native build, arm64 from `make aarch64`.
deb: build
	./scripts/build-deb.sh

# The packages inspected and installed into a throwaway bookworm root.
test-deb: deps
	./scripts/test-deb.sh

# The virtual board: a qemu VM with vivid, snd-aloop and gpio-sim devices runs callbox device
# against a server on this host (scripts/test-board.sh).
test-board: deps
	./scripts/test-board.sh
