# Set-up and the two entry points: `make demo` and `make test` (and `make docs`).
VENV ?= .venv
# UTF-8 everywhere, whatever the locale of the machine (reports and tables hold ±, →, …)
export PYTHONUTF8 := 1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.segfew-installed
DEMO_DIR ?= demo-run
SITE_DIR ?= site
# the tests whose behaviour depends on the CPU run again as on a CPU with AVX2 only
AVX2_ONLY := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2

.PHONY: install test lint docs demo bench explain-shot clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# one command: torch pinned beside the extras, or pip upgrades it (through nnunetv2's
	# torchvision) to a CUDA build; segfew never imports torchvision
	$(PY) -m pip install -q torch==2.13.0 -e '.[dev,nnunet]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check segfew tests bench examples
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy bench  # the benchmarks call the library: keep them in step with it

test: lint docs
	$(VENV)/bin/pytest -q
	$(AVX2_ONLY) $(VENV)/bin/pytest -q -p no:cacheprovider -m cpu_dependent

# the documentation site (docs/, mkdocs.yml); --strict: a broken link or reference fails
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $(SITE_DIR)

demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash examples/demo.sh $(DEMO_DIR)

# speed and memory tables (docs/benchmarks.md), a few minutes; BENCH_FLAGS=--quick for a short run
bench: $(STAMP)
	$(PY) bench/bench_speed.py $(BENCH_FLAGS)

# render an --explain index (default: the demo's) to index.png in headless Chromium
EXPLAIN ?= $(DEMO_DIR)/explain
CHROMIUM ?= chromium
explain-shot:
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,800 \
	    --screenshot="$(abspath $(EXPLAIN))/index.png" "file://$(abspath $(EXPLAIN))/index.html"

clean:
	rm -rf $(DEMO_DIR) $(SITE_DIR) .pytest_cache .mypy_cache .ruff_cache
