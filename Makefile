# The two commands of the README: `make demo` and `make test`. Both set up the virtual environment first:
# `make demo` installs the product only (`pip install -e .`); `make test` (and `make setup`, used by CI) adds the
# extras the tests, benchmarks, browser test and Kubernetes test need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --quiet --disable-pip-version-check
PRODUCT_STAMP := $(VENV)/.installed-product
STAMP := $(VENV)/.installed
# `make demo ARGS=--verbose` (or VERBOSE=1) also shows Dagster's console stream.
DEMO_ARGS := $(strip $(ARGS) $(if $(filter 1 yes true,$(VERBOSE)),--verbose))

.PHONY: setup test demo lint bench screenshots clean

$(PRODUCT_STAMP): pyproject.toml setup.py imocha_pipeline/sync/core/_textmatch.c
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e .
	touch $@

$(STAMP): $(PRODUCT_STAMP)
	$(PIP) -e '.[test,bench,ui,k8s]'
	touch $@

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(PRODUCT_STAMP)
	$(BIN)/imocha-pipeline demo $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

# The Dagster UI pictures of docs/ui.md, taken by the browser test after a demo-sized sync (needs Debian's chromium).
screenshots: $(STAMP)
	IMOCHA_PIPELINE_SCREENSHOT_DIR=docs/ui IMOCHA_PIPELINE_REQUIRE_BROWSER=1 \
	  $(BIN)/python -m pytest -q -p no:cacheprovider imocha_pipeline_tests/test_ui.py

clean:
	rm -rf $(VENV) .pytest_cache .tmp_dagster_home_* build *.egg-info
