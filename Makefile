# Every target does its own set-up and can be run again; see README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
MODEL_DIR := var/models/default

.PHONY: venv lock model infra-up infra-down migrate topics run test test-unit lint format bench package clean

venv: $(STAMP)

# A .venv whose python has no pip (a venv that failed half-way) is made again.
# The constraints go in through the environment rather than `-c`, so that they reach the
# isolated environments pip builds sdists in (psycopg2, this project) and pin their
# setuptools too: PIP_BUILD_CONSTRAINT for pip 25.3 on (from 26.2, the only way), and
# PIP_CONSTRAINT, which older pip passes on to them (and newer pip still reads itself).
PINS := $(CURDIR)/constraints.txt
PIP_PINNED := PIP_CONSTRAINT=$(PINS) PIP_BUILD_CONSTRAINT=$(PINS) $(PY) -m pip install --quiet --disable-pip-version-check
$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	@$(PY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PIP_PINNED) -r requirements-dev.txt
	$(PIP_PINNED) --no-deps -e .
	@touch $@

# constraints.txt again, from a venv of its own: the newest versions the requirements
# allow, transitive ones included, and the newest setuptools, which builds the sdists. Run `make test` after it, and commit both.
LOCK_VENV := var/lock-venv
lock:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
		|| { echo "make lock pins for Python 3.11: run it as make lock PYTHON=python3.11" >&2; exit 1; }
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(LOCK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade setuptools
	{ sed -n '/^#/!q;p' constraints.txt; $(LOCK_VENV)/bin/python -m pip freeze --all --exclude pip; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf $(LOCK_VENV)

# The default model is rebuilt reproducibly (same seed, same probabilities) when missing
# or older than the code that trains and checks it (the card records the fast scorer's
# agreement, which that code computes).
model: $(MODEL_DIR)/model_card.json

# The default model is the default one whatever the shell exports: empty MODEL_* are unset.
$(MODEL_DIR)/model_card.json: $(STAMP) $(wildcard shared/model/*.py)
	MODEL_TRAIN_DATA= MODEL_SEED= MODEL_TRAIN_SIZE= MODEL_DATE= \
		$(PY) -m shared.model train --out $(MODEL_DIR)

infra-up: venv
	@$(PY) -m infra up

infra-down: venv
	@$(PY) -m infra down

migrate: venv
	$(PY) -m shared.db.migrations

topics: venv
	$(PY) -m shared.kafka.topics

# Flags go through ARGS, e.g. `make run ARGS="--port 9000 --log-level DEBUG"`.
run: venv model
	$(PY) local_runner.py $(ARGS)

test: venv model
	$(PY) -m pytest

test-unit: venv model
	$(PY) -m pytest -m "not integration and not e2e and not fault"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: venv model
	$(PY) -m bench

# One deployable folder per function in dist/functions/<name>/ (main.py, shared/,
# requirements.txt and the constraints.txt it points to). The packager needs only the
# standard library: no venv, so no compiler, is needed to package.
package:
	$(PYTHON) -m infra.package --out dist/functions

clean:
	rm -rf dist build .pytest_cache .ruff_cache
