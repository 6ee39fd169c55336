# mushroom-router: `make run` trains and serves, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
HOST ?= 127.0.0.1
PORT ?= 5001
# The real data set for `make bench`: give it, e.g. `make bench MUSHROOM_DATA=~/mushroom_cleaned.csv`
# (download it from Kaggle); CI sets it in .ci/run.
MUSHROOM_DATA ?=
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# mlflow models serve and airflow start uvicorn/gunicorn by name: the venv's bin/ must be on PATH.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: help install run train serve notebook test lint format lock bench airflow compose-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# --compile-bytecode: uv writes no .pyc by default, and with PYTHONDONTWRITEBYTECODE set (common in
# containers and CI) every start of mlflow, uvicorn and airflow would compile thousands of modules
# again: it halves the model server's cold start.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m pip --version >/dev/null 2>&1 || python3 -m venv --clear $(VENV)  # missing, or left half-made
	$(PY) -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -c constraints.txt -e '.[airflow,auth,celery,postgres,spark,dev]'
	touch $@

install: $(VENV)/.installed ## create .venv and install the package with every extra (idempotent)

run: install ## train on the resolved data, register, and serve the champion on 127.0.0.1:$(PORT)
	$(PY) -m router_model train
	$(PY) -m router_model serve --host $(HOST) --port $(PORT)

train: install ## train and register only
	$(PY) -m router_model train

serve: install ## serve models:/mushroom-router@champion
	$(PY) -m router_model serve --host $(HOST) --port $(PORT)

notebook: install ## run notebooks/quickstart.ipynb on the champion; writes notebooks/quickstart-executed.ipynb
	$(VENV)/bin/jupyter-execute notebooks/quickstart.ipynb --output quickstart-executed

test: install ## lint, then run every test
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: install ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check router_model dags tests bench conftest.py

format: install ## ruff format
	$(VENV)/bin/ruff format router_model dags tests bench conftest.py

bench: install ## run every benchmark on MUSHROOM_DATA and write docs/benchmarks.md (installs wrk, valgrind)
	@test -n "$(MUSHROOM_DATA)" || { echo "make bench needs MUSHROOM_DATA=/path/to/mushroom_cleaned.csv"; exit 2; }
	@command -v wrk >/dev/null && command -v valgrind >/dev/null || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk valgrind; }
	$(PY) bench/run.py --data "$(MUSHROOM_DATA)"

airflow: install ## run Airflow 3 (airflow standalone) with the retrain DAG on http://127.0.0.1:8080
	AIRFLOW_HOME=$(CURDIR)/.airflow \
	AIRFLOW__API__HOST=$(HOST) \
	AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__CORE__PARALLELISM=4 \
	MUSHROOM_HOME=$(CURDIR) \
	airflow standalone

lock: ## re-resolve constraints.txt from pyproject.toml (needs uv)
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras --python-version 3.11 -c docker/airflow-image-bounds.txt -o constraints.txt

clean: ## remove the local store, artifacts, data cache and venv
	rm -rf $(VENV) mlflow.db mlartifacts mlruns data .airflow .pytest_cache .ruff_cache
