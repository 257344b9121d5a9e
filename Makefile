# acode-dagster: every command a person or CI runs. `make help` lists them.
SHELL := /bin/bash
UV := python3 -m uv
export UV_PROJECT_ENVIRONMENT ?= .venv
export ACODE_HOME ?= $(CURDIR)/.acode
export DAGSTER_HOME ?= $(ACODE_HOME)/dagster

.PHONY: help uv sync quickstart test lint format dev stack-start stack-stop stack-status bench bench-scale clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

uv:
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv

sync: uv  ## install the locked dependencies into .venv
	@$(UV) sync --locked --extra test --quiet

quickstart: sync  ## start the local MariaDB pair, load 3 demo days, materialize them through Dagster
	@$(UV) run --no-sync acode quickstart --days 3

test: sync  ## run the test suite (starts its own MariaDB servers and S3 server)
	@$(UV) run --no-sync pytest

lint: sync  ## ruff, formatting, mypy and `dagster definitions validate`, as CI runs them
	@$(UV) run --no-sync ruff check acode_dagster acode_dagster_tests bench
	@$(UV) run --no-sync ruff format --check acode_dagster acode_dagster_tests bench
	@$(UV) run --no-sync mypy
	@mkdir -p $(DAGSTER_HOME)
	@$(UV) run --no-sync dagster definitions validate -m acode_dagster.definitions

format: sync  ## apply ruff's fixes and formatting
	@$(UV) run --no-sync ruff check --fix acode_dagster acode_dagster_tests bench
	@$(UV) run --no-sync ruff format acode_dagster acode_dagster_tests bench

dev: sync  ## the Dagster UI and daemon on the embedded default (http://127.0.0.1:3000)
	@mkdir -p $(DAGSTER_HOME)
	@$(UV) run --no-sync acode stack start
	@$(UV) run --no-sync dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

stack-start: sync  ## start the local MariaDB primary and its replica
	@$(UV) run --no-sync acode stack start

stack-stop: sync  ## stop them
	@$(UV) run --no-sync acode stack stop

stack-status: sync  ## show them
	@$(UV) run --no-sync acode stack status

bench: sync  ## replication (embedded and Airbyte), keys, write-audit-publish, checks, failover-drill, mirror, TLS and business-metrics benchmarks (bench/README.md; ~62 minutes)
	@$(UV) run --no-sync python bench/replication.py
	@$(UV) run --no-sync python bench/keys.py --sizes 2000000,10000000
	@$(UV) run --no-sync python bench/audit.py
	@$(UV) run --no-sync python bench/checks.py
	@$(UV) run --no-sync python bench/failover_drill.py
	@$(UV) run --no-sync python bench/mirror.py
	@$(UV) run --no-sync python bench/tls.py
	@$(UV) run --no-sync python bench/business.py

bench-scale: sync  ## the production-volume bench: 2M, 10M and 50M-row days (~35 GB of disk, ~2 hours the first time; bench/README.md)
	@$(UV) run --no-sync python bench/scale.py --work bench/.work/scale --keep

clean:  ## stop the local pair and remove all local state (.acode)
	-@$(UV) run --no-sync acode stack stop
	rm -rf $(ACODE_HOME)
