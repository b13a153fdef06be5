# The two commands a newcomer needs:  `make plan` (set up + plan the dev stack offline)
# and `make test` (set up + run every test). Everything else is optional.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup plan test lock clean

setup: $(STAMP)

# Plain pip compiles bytecode on install, so later runs do not pay for it (PYTHONDONTWRITEBYTECODE).
$(STAMP): requirements.lock router/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e ./router
	touch $@

plan: setup
	$(PY) -m fleet plan --stack dev

test: setup
	$(PY) -m pytest -q -n 2

lock:
	$(VENV)/bin/pip freeze --exclude-editable > requirements.lock

clean:
	rm -rf build .pytest_cache
