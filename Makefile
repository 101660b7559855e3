# EmberDB developer entry points. `make run` and `make test` are all a fresh machine needs.
#
# One build profile (release) serves the server, the tests and the benches, so RocksDB's
# C++ is compiled once; the target dir lives outside the checkout so fresh clones reuse it.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/emberdb/target
CARGO ?= cargo
DATA_DIR ?= ./data
VENV ?= $(HOME)/.cache/emberdb/venv

.PHONY: setup run build test lint bench clean-data

setup:
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --release --workspace --bins

## Run the server on an embedded default (data in ./data, gRPC 127.0.0.1:50051, metrics 127.0.0.1:9464).
run: setup
	$(CARGO) run --release -p emberdb-server --bin emberdb -- --data-dir $(DATA_DIR)

## Run the whole test suite. Fail-fast order: build prerequisites, then the build itself, and only
## then what the tests alone need (Python venv, Chromium, Prometheus, Fashion-MNIST). The Rust tests
## run first, then the Python client's (pytest, against the real `emberdb` binary).
test: setup
	$(CARGO) test --release --workspace --no-run
	@EMBERDB_VENV=$(VENV) bash scripts/setup-test.sh
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --force-reinstall ./client/python
	@rc=0; \
	$(CARGO) test --release --workspace --no-fail-fast || rc=1; \
	EMBERDB_BIN=$(CARGO_TARGET_DIR)/release/emberdb $(VENV)/bin/python -m pytest -q -p no:cacheprovider client/python/tests || rc=1; \
	exit $$rc

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings

## Benchmarks (see benches/README.md).
bench: setup
	$(CARGO) bench -p emberdb-benches

clean-data:
	rm -rf $(DATA_DIR)
