# callbox: `make demo` runs the demo, `make test` runs every test. Both install what is
# missing first. The cargo target dir lives outside the clone so CI stays warm.
CARGO_TARGET_DIR ?= $(HOME)/.cache/callbox-target
export CARGO_TARGET_DIR
CALLBOX := $(CARGO_TARGET_DIR)/release/callbox

.PHONY: deps build demo test lint bench

deps:
	./scripts/install-deps.sh

build: deps
	cargo build --release

demo: build
	$(CALLBOX) demo --peers 2 --duration 20

lint: deps
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

test: lint
	cargo test --all-targets

bench: build
	$(CALLBOX) bench --iterations 300
