# Two commands do all the set-up on a fresh machine (Python 3.11+ with pip):
#   make demo   – install into .venv and run `gmrun demo` (synthetic catalog → plan → 4 tiles → mosaic.png)
#   make test   – install into .venv (+ test extras, etcd, the kube-apiserver test build, chromium,
#                 gdal-bin) and run the tests
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(PY) -m uv

.PHONY: demo test install install-test k8s-binaries test-packages lint bench bench-tile clean

$(BIN)/gmrun: pyproject.toml
	$(PY) -m pip install --quiet uv
	$(UV) venv --allow-existing --python $(PY) $(VENV)
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[test]'
	touch $@

install: $(BIN)/gmrun

demo: install
	$(BIN)/gmrun demo gmrun-demo

k8s-binaries:
	bash .ci/k8s-setup.sh

test-packages:  # chromium (the report) and gdal-bin (the mosaics), from Debian's apt
	bash .ci/test-packages.sh

lint: install
	$(BIN)/ruff check runner algos tests benchmarks
	$(BIN)/ruff format --check runner algos tests benchmarks
	$(BIN)/mypy

test: install k8s-binaries test-packages lint
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=20

bench: install
	$(BIN)/python benchmarks/bench_algos.py

bench-tile: install  # long (~25 min the first time, ~11 GB of RAM at its peak: odc-algo's reduce): see docs/performance.md
	$(UV) pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[test,bench]'
	$(BIN)/python benchmarks/bench_tile.py

clean:
	rm -rf $(VENV) gmrun-demo gmrun-out
