# `make test` = the whole default suite; `make test-all` adds the slow end-to-end tests (CI runs both).
# `make docs` builds the documentation site strictly into site/; `make docs-serve` serves it while you edit.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-all test-slow docs docs-serve clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@# On this project's machines torch 2.14.1/torchvision 0.29.1 come from local disk; elsewhere any recent pair works.
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1 \
		|| $(PY) -m pip install -q torch torchvision
	@# The dependencies are in pyproject.toml; torch/torchvision above already satisfy theirs.
	$(PY) -m pip install -q -e ".[test,docs,stream,openvino]"
	@touch $(STAMP)

# The OpenVINO tests run in a pytest process of their own: with OpenVINO and NNCF loaded, later
# tests in the same process crashed (segmentation fault) at varying places, never alone.
test: venv
	$(PY) -m pytest -q -m "not slow and not openvino"
	$(PY) -m pytest -q -m "openvino and not slow"

test-slow: venv
	$(PY) -m pytest -q -m "slow and not openvino"
	$(PY) -m pytest -q -m "slow and openvino"

test-all: test test-slow

# The CLI reference is generated from the parsers at build time (docs/_tooling/cli_reference.py).
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean:
	rm -rf $(VENV) build dist site *.egg-info .pytest_cache
