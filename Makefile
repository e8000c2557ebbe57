# The two commands of the README:
#   make demo   set up (first time) and open the dashboard on the built-in demo
#   make test   set up (first time) and run the whole test suite (unit, API, mergekit parity, browser)
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: demo test setup setup-dev browser clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch first: a pinned version takes the local CPU wheel instead of a multi-GB CUDA build
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

setup: $(VENV)/.runtime
setup-dev: $(VENV)/.dev

# Browser tests drive Debian's chromium; install it when missing (needs root, as on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: run 'sudo apt-get install chromium' (browser tests need it)"; exit 1; fi; }

demo: setup
	HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-1} $(PY) app.py $(ARGS)

test: setup-dev browser
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
