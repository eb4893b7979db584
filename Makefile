# The two commands of the README: `make demo` and `make test`. Both build .venv from PyPI.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: demo test docs lint typecheck unit stress-test bench bench-dave bench-scale bench-quick interop conformance conformance-full soak soak-ci test-all clean

$(STAMP): pyproject.toml setup.py src/wavegate/transport/_picows_listener.pyx
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m wavegate demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks chaos conformance interop examples
	$(BIN)/ruff format --check src tests benchmarks chaos conformance interop examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

# The suite 3 times beside 2 CPU-burning processes: no test may need an idle machine.
stress-test: $(STAMP)
	tools/stress-test.sh 3

# Benchmarks: never part of `make test`. Their own venv holds the peers (hikari-wave...).
$(BENCH_STAMP): pyproject.toml benchmarks/requirements.txt setup.py src/wavegate/transport/_picows_listener.pyx
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q --upgrade pip
	$(BENCH_VENV)/bin/pip install -q -r benchmarks/requirements.txt -e '.[fast,voice]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m benchmarks.run

# DAVE: READY -> MLS group active for 2/3/5 members, and a join's rekey (loopback).
bench-dave: $(STAMP)
	$(BIN)/python -m benchmarks.dave

# Workload G: thousands of VoiceClient sessions in one process against `wavegate serve`
# in another (memory per session, heartbeat round trips, zombies); about 6 minutes.
bench-scale: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m benchmarks.scale --sessions 1000 2000 5000 9000 --seconds 60 --out docs/benchmarks

bench-quick: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m benchmarks.run --quick --out /tmp/wavegate-bench-quick

# Real third-party voice clients against `wavegate serve` (needs node >= 20 and npm):
# The documentation site, into site/ (mkdocs --strict: a broken link or reference fails).
DOCS_VENV := .venv-docs
DOCS_STAMP := $(DOCS_VENV)/.installed

$(DOCS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/pip install -q --upgrade pip
	$(DOCS_VENV)/bin/pip install -q -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict

# discord.js' @discordjs/voice, pinned in interop/js/package-lock.json, and discord.py,
# pinned in interop/discordpy/requirements.txt (in a venv of its own).
DPY_VENV := .venv-discordpy
DPY_STAMP := $(DPY_VENV)/.installed

$(DPY_STAMP): interop/discordpy/requirements.txt
	$(PYTHON) -m venv $(DPY_VENV)
	$(DPY_VENV)/bin/pip install -q --upgrade pip
	$(DPY_VENV)/bin/pip install -q -r interop/discordpy/requirements.txt
	touch $(DPY_STAMP)

interop: $(STAMP) $(DPY_STAMP)
	cd interop/js && npm ci --no-audit --no-fund --loglevel=error
	$(BIN)/pytest -p no:cacheprovider --rootdir interop interop

# Autobahn|Testsuite (needs CPython 2.7.18 from pyenv): non-compression cases, per transport.
conformance: $(STAMP)
	conformance/run.sh conformance/fuzzingserver.json

# Every case, compression included (about 9 minutes per client): when compression code changes.
conformance-full: $(STAMP)
	conformance/run.sh conformance/fuzzingserver-full.json

# Chaos soak: voice sessions under random faults, seeded; zero loss, zero leaks.
soak: $(STAMP)
	$(BIN)/python -m chaos.soak --duration 120

soak-ci: $(STAMP)
	$(BIN)/python -m chaos.soak --duration 30

# The suite on every CPython 3.10-3.13 that pyenv provides.
test-all:
	tools/test-all.sh

clean:
	rm -rf $(VENV) $(BENCH_VENV) .venv-tools .venv-autobahn .venv-discordpy .venv-docs site .venv-py* reports build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
