# Everything runs from .venv, which these targets create and fill from PyPI on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench worker api clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m devstack

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m bench

worker: $(STAMP)
	$(PY) worker.py

api: $(STAMP)
	$(PY) -m uvicorn starter.api:app --host 0.0.0.0 --port 8000

clean:
	rm -rf $(VENV) .data
