# `make run` and `make test` are all the set-up a fresh Debian/Ubuntu machine needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PLUGINS := plugins/watzap plugins/meta plugins/twilio plugins/sentry
PYTEST_ARGS ?=

.PHONY: install services run test test-unit test-integration lint typecheck bench bench-console clean

# A venv that cannot run pip (made while python3-venv was missing …) is made again;
# the sub-make then sees its stamp gone and installs into the new one.
install:
	@scripts/ensure-venv.sh $(VENV) $(PYTHON)
	@$(MAKE) --no-print-directory $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(wildcard $(addsuffix /pyproject.toml,$(PLUGINS)))
	@$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' $(foreach p,$(wildcard $(PLUGINS)),-e $(p))
	@touch $@

services:
	@scripts/ensure-service.sh rabbitmq
	@scripts/ensure-service.sh redis
	@scripts/ensure-service.sh postgresql

run: install
	@scripts/ensure-service.sh rabbitmq
	@if [ ! -f .env ]; then cp .env.example .env; echo "created .env from .env.example (log provider, alias 'logistic')"; fi
	@scripts/ensure-service.sh rabbitmq-management
	@echo "POST notifications to http://127.0.0.1:$${GATEWAY_PORT:-8080}/notify"
	@$(VENV)/bin/wa-gateway db upgrade
	$(VENV)/bin/wa-gateway run

# Unit tests need nothing but the venv (plugins' tests run against local fake APIs);
# integration tests talk to the real RabbitMQ, Redis and PostgreSQL (the ledger's tests),
# which `services` makes sure of.
# pytest exit 5 means no test was collected: a broken set-up, never a success.
UNIT_TESTS := tests/unit $(wildcard $(addsuffix /tests,$(PLUGINS)))
PYTEST := $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)
define run_pytest
	@$(PYTEST) $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: pytest collected no tests in $(1): the set-up is broken" >&2; exit 1; fi; exit $$rc
endef

test: lint typecheck test-unit test-integration

test-unit: install
	$(call run_pytest,$(UNIT_TESTS))

test-integration: install services
	@scripts/ensure-service.sh chromium
	$(call run_pytest,tests/integration)

lint: install
	@$(VENV)/bin/ruff check core plugins tests benchmarks && echo "ruff: clean"

typecheck: install
	@$(VENV)/bin/mypy core/wa_gateway

bench: install services
	$(PY) benchmarks/run.py

# The operator console's pages with 100,000 notifications in SQLite and in PostgreSQL.
bench-console: install services
	$(PY) benchmarks/console.py

clean:
	rm -rf $(VENV) build dist core/*.egg-info .bench
