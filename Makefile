# ReviewFlow developer tasks. `make run` starts everything on one machine with no server to
# install (SQLite and an embedded Celery broker under var/); `make test` runs the test suite.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MANAGE := $(BIN)/python manage.py
# Where the SQLite file, the embedded broker and beat's schedule live (settings read the same).
export REVIEWFLOW_VAR_DIR ?= $(CURDIR)/var
RUN_HOST ?= 127.0.0.1
RUN_PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: help install run test lint bench bench-peer clean

help:
	@echo "make run    migrate, load demo data, start the web server and a Celery worker (Ctrl-C stops)"
	@echo "make test   run the tests (PYTEST_ARGS='-k ledger -x' to pass options)"
	@echo "make lint   ruff, and check that no migration is missing"
	@echo "make bench  run the benchmarks, the peer (Wagtail, own .venv-peer) included"
	@echo "make bench-peer  measure the peer, Wagtail 8's one-step group approval (own .venv-peer)"
	@echo "make clean  remove var/, .venv and .venv-peer"

# The virtualenv itself; the stamp below reinstalls whenever pyproject.toml changes.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[test]"
	touch $(STAMP)

$(VENV): $(STAMP)

install: $(STAMP)

# Development instance: DEBUG on unless the environment says otherwise.
run: export DEBUG ?= 1
# The demo's webhook account posts to a receiver on this machine (127.0.0.1:8765).
run: export REVIEWFLOW_ALLOW_PRIVATE_NETWORKS ?= 1
# Links in the mails point at this instance, whatever its port.
run: export REVIEWFLOW_BASE_URL ?= http://$(RUN_HOST):$(RUN_PORT)
run: $(STAMP)
	mkdir -p "$(REVIEWFLOW_VAR_DIR)/broker/queue" "$(REVIEWFLOW_VAR_DIR)/broker/control"
	$(MANAGE) migrate --noinput
	$(MANAGE) demo_data
	@pids=(); \
	stop() { trap - INT TERM EXIT; kill "$${pids[@]}" 2>/dev/null || true; wait || true; }; \
	trap 'stop; exit 130' INT; trap 'stop; exit 143' TERM; trap stop EXIT; \
	$(BIN)/celery -A reviewflow worker -B -Q default,publishing,maintenance,notifications --pool=solo -l info \
		& pids+=($$!); \
	$(MANAGE) runserver $(RUN_HOST):$(RUN_PORT) & pids+=($$!); \
	sleep 2; \
	echo; \
	echo "ReviewFlow is running at http://$(RUN_HOST):$(RUN_PORT)/  (Ctrl-C stops the web server and the worker)"; \
	echo "Log in as alice or bruno (advisors), rita or sam (reviewers), carla (compliance admin);"; \
	echo "the password is demo for all of them."; \
	echo; \
	status=0; wait -n || status=$$?; \
	echo "A process stopped (exit status $$status); stopping the others."; \
	exit $$status

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	mkdir -p "$(REVIEWFLOW_VAR_DIR)"
	DEBUG=1 $(MANAGE) makemigrations --check --dry-run

# The nearest open-source peer on this machine: Wagtail 8's one-step group approval (our
# throughput target is ten times its pages/s; `make bench` measures it too, in the same run as
# our cycle). Wagtail goes into its own virtualenv, never into .venv. Its database is DROPPED and
# recreated at every run, so its name must contain "bench" and "peer";
# BENCH_PEER_POSTS=30 BENCH_PEER_RUNS=1 for a quick check.
PEER_VENV := .venv-peer
PEER_STAMP := $(PEER_VENV)/.installed

$(PEER_STAMP):
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install -q "wagtail==8.0.1" "psycopg[binary]>=3.2" dj-database-url
	touch $(PEER_STAMP)

# Every benchmark (benchmarks/__main__.py), the peer's included, on PostgreSQL. The databases are
# DROPPED and recreated at every run, so the name in DATABASE_URL must contain "bench"; the
# queue's plans go to var/bench/queue_plan.txt.
bench: $(STAMP) $(PEER_STAMP)
	DATABASE_URL="$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/reviewflow_bench}" \
	DJANGO_SETTINGS_MODULE="$${DJANGO_SETTINGS_MODULE:-tests.settings}" \
		$(BIN)/python -m benchmarks

bench-peer: $(PEER_STAMP)
	DATABASE_URL="$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/reviewflow_bench_peer}" \
		$(PEER_VENV)/bin/python -m benchmarks.peer

clean:
	rm -rf var $(VENV) $(PEER_VENV)
