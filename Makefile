# The two commands a newcomer needs:  `make plan` (set up + plan the dev stack offline)
# and `make test` (set up + run every test). Everything else is optional.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov pins many packages of its own: it gets its own virtualenv, used by the manifest tests.
CHECKOV_STAMP := .venv-checkov/.installed

.PHONY: setup plan test lock clean image bench upstream upstream-verify upstream-lock test-upstream mutation

setup: $(STAMP)

# Plain pip compiles bytecode on install, so later runs do not pay for it (PYTHONDONTWRITEBYTECODE).
$(STAMP): requirements.lock router/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -e ./router
	touch $@

# With no chart cache yet (a first clone: `python -m fleet charts pull` fills it), the dev plan is still
# printed, with the missing chart named and its releases reported unchecked.
plan: setup
	$(PY) -m fleet plan --stack dev --charts-if-cached

$(CHECKOV_STAMP): requirements-checkov.lock
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.lock
	touch $@

test: setup $(CHECKOV_STAMP)
	PYTHONPATH=. $(VENV)/bin/lint-imports --no-cache  # the layers README draws (pyproject.toml)
	$(PY) -m pytest -q -n 2

# Upstream test data at the pinned versions (tests/upstream.py): the CRD bundles from their release URLs
# and every pinned chart, into $(UPSTREAM_DIR)/{crds,charts} (the layout of ../shared), each file checked
# against tests/upstream.sha256. Needs the internet; `upstream-verify` checks a cache offline.
UPSTREAM_DIR ?= build/upstream

upstream: setup
	$(PY) tests/upstream.py fetch --dest $(UPSTREAM_DIR)

upstream-verify: setup
	$(PY) tests/upstream.py verify --dest $(UPSTREAM_DIR)

# Record the checksums of what $(UPSTREAM_DIR) holds; review the diff of tests/upstream.sha256 like a pin bump.
upstream-lock: setup
	$(PY) tests/upstream.py lock --dest $(UPSTREAM_DIR)

# `make test` against the fetched caches (what CI runs): nothing skipped for want of upstream data.
test-upstream: upstream
	FLEET_CRDS_DIR=$(abspath $(UPSTREAM_DIR))/crds FLEET_CHARTS_DIR=$(abspath $(UPSTREAM_DIR))/charts $(MAKE) test

# Mutation testing (tests/mutation.py, mutmut): the fleet spec, cost and model-fit modules against
# their tests, and the router's routing core against test_core.py; prints each scope's score and the
# surviving mutants. Bounded scopes, one mutant at a time by default (MUTATION_JOBS): tens of minutes on
# a shared 2-core machine. Not part of `make test` (nor CI).
MUTATION_JOBS ?= 1
mutation: setup
	$(PY) tests/mutation.py all --jobs $(MUTATION_JOBS)

# The router image, built locally with whichever of docker, podman or buildah is installed and
# tagged with the content hash of router/ that the dev stack deploys (components/router_image.py).
# Then: `kind load docker-image <tag> --name inference-fleet` (podman: `podman save <tag> -o
# router.tar && kind load image-archive router.tar --name inference-fleet`).
BUILDER ?= $(firstword $(foreach b,docker podman buildah,$(shell command -v $(b) 2>/dev/null)))
IMAGE_TAG = $(shell $(PY) -c 'from components.router_image import local_tag; print(local_tag())')

image: setup
	@test -n "$(BUILDER)" || { echo "make image: needs docker, podman or buildah on PATH" >&2; exit 2; }
	$(BUILDER) build -f router/Dockerfile -t $(IMAGE_TAG) router
	@echo "built $(IMAGE_TAG); load it into kind: kind load docker-image $(IMAGE_TAG) --name inference-fleet"

# Router benchmarks against vllm-router and the LiteLLM proxy (issues 11, 18): peers in their own
# virtualenv, load from wrk (a Debian package: `apt-get install -y wrk`), results in bench/results/
# (bench/README.md). About 15 minutes. Not part of `make test` (nor CI).
BENCH_STAMP := .venv-bench/.installed
$(BENCH_STAMP): bench/requirements.txt
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

# The interpreter the routers under test run on: an optimised CPython 3.11, as the router image's
# python:3.11-slim (docker-library builds it --enable-optimizations --with-lto). Debian's python3.11
# runs this router 1.1-1.2x faster than a pyenv build without them; the bench's table shows both.
ROUTER_PYTHON ?= $(firstword $(wildcard /usr/bin/python3.11) $(PYTHON))
BENCH_ROUTER_STAMP := .venv-bench-router/.installed
$(BENCH_ROUTER_STAMP): router/pyproject.toml
	$(ROUTER_PYTHON) -m venv .venv-bench-router
	@# the router's pinned dependencies only: the bench runs router/ from the tree (no build/ left in it)
	.venv-bench-router/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('router/pyproject.toml', 'rb'))['project']['dependencies']))" > .venv-bench-router/router-requirements.txt
	.venv-bench-router/bin/pip install --quiet --disable-pip-version-check -r .venv-bench-router/router-requirements.txt
	touch $@

bench: setup $(BENCH_STAMP) $(BENCH_ROUTER_STAMP)
	@command -v wrk >/dev/null || { echo "make bench: needs wrk on PATH: apt-get install -y wrk (Debian/Ubuntu), brew install wrk (macOS)" >&2; exit 2; }
	$(PY) bench/run.py

lock:
	$(VENV)/bin/pip freeze --exclude-editable > requirements.lock
	.venv-checkov/bin/pip freeze > requirements-checkov.lock

clean:
	rm -rf build .pytest_cache mutants
