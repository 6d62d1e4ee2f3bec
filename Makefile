# Set-up and the two entry points: `make demo` and `make test`.
VENV ?= .venv
# UTF-8 everywhere, whatever the locale of the machine (reports and tables hold ±, →, …)
export PYTHONUTF8 := 1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segfew-installed
DEMO_DIR ?= demo-run

.PHONY: install test lint demo bench explain-shot clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check segfew tests bench examples
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy bench  # the benchmarks call the library: keep them in step with it

test: lint
	$(VENV)/bin/pytest -q

demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash examples/demo.sh $(DEMO_DIR)

# speed and memory tables (issue 11), a few minutes; BENCH_FLAGS=--quick for a short run
bench: $(STAMP)
	$(PY) bench/bench_speed.py $(BENCH_FLAGS)

# render an --explain index (default: the demo's) to index.png in headless Chromium
EXPLAIN ?= $(DEMO_DIR)/explain
CHROMIUM ?= chromium
explain-shot:
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,800 \
	    --screenshot="$(abspath $(EXPLAIN))/index.png" "file://$(abspath $(EXPLAIN))/index.html"

clean:
	rm -rf $(DEMO_DIR) .pytest_cache .mypy_cache .ruff_cache
