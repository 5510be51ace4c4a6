# Flywheel. Two set-up commands: `make up` (the whole loop locally) and `make test` (every test).
# Every Python project (libs/*, services/*, tests/) has its own uv lock file and .venv: Feast, KServe
# and alibi-detect pin conflicting numpy/Pillow versions, so they never share an environment.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
UV_VERSION := 0.13.9
TOOLS := $(CURDIR)/.tools
UV := $(TOOLS)/bin/uv
# The interpreter itself, not the pyenv/asdf shim that `command -v` finds first: given a shim's path, uv
# cannot tell that an existing .venv was made from that interpreter and re-creates it on every sync.
PYTHON_FOUND := $(shell command -v $(PYTHON) 2>/dev/null || command -v python3)
export UV_PYTHON := $(if $(PYTHON_FOUND),$(shell $(PYTHON_FOUND) -c \
  'import sys; print(getattr(sys, "_base_executable", None) or sys.executable)'))
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy

SERVICE_PROJECTS := libs/flywheel-core libs/flywheel-contracts services/features services/trainer services/predictor \
  services/transformer services/drift services/router services/controller
TEST_PROJECTS := tests tests/cluster
PROJECTS := $(SERVICE_PROJECTS) $(TEST_PROJECTS)
DATA_DIR ?= $(CURDIR)/data
MODEL_REPO ?= $(CURDIR)/model_repo
DATA_SIZE ?= default
export FLYWHEEL_DATA_DIR := $(DATA_DIR)

FEATURES_PY := services/features/.venv/bin/python
TRAINER_PY := services/trainer/.venv/bin/python
# Training publishes each version with the drift service's precomputed detector state.
TRAIN := FLYWHEEL_TRAINER_PRE_PUBLISH_COMMAND="$(CURDIR)/services/drift/.venv/bin/python -m flywheel_drift precompute \
  --version-dir" $(TRAINER_PY) -m flywheel_trainer train --feature-repo feature_repo --data $(DATA_DIR) \
  --model-repo $(MODEL_REPO) --model fraud

# `$(SYNC) PROJECT...` syncs the projects whose lock inputs changed since their last sync; a step runs it
# (with --quiet) for the environments it needs, so `make data` or `make train` works from a fresh clone.
SYNC := UV=$(UV) hack/make/sync.sh
# TIMED runs a long step between two lines that name it, the second with the time it took.
TIMED := hack/make/timed.sh
# $(call missing,FILES): FORCE when any of FILES does not exist, so a partly deleted output is remade.
missing = $(if $(filter-out $(wildcard $(1)),$(1)),FORCE)
.PHONY: FORCE
FORCE:

.PHONY: help
help: ## list the targets
	@awk -F':.*## ' '/^[a-z][a-z0-9-]*:.*## / { name[++n] = $$1; text[n] = $$2; if (length($$1) > w) w = length($$1) } \
	  END { for (i = 1; i <= n; i++) printf "  %-" w "s  %s\n", name[i], text[i] }' $(MAKEFILE_LIST)

.PHONY: tools
tools: $(UV) ## install the pinned uv into .tools/
$(UV):
	$(UV_PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

.PHONY: install
install: $(UV) ## create every project's .venv from its lock file (skips those whose lock inputs are unchanged)
	@$(SYNC) $(PROJECTS)

.PHONY: lock
lock: $(UV) ## re-resolve every project's lock file
	@for project in $(PROJECTS); do (cd $$project && $(UV) lock); done

# The simulator writes these together; it runs once (again only when one of them is missing: remove data/
# or run `make clean` to simulate afresh).
DATA_FILES := $(addprefix $(DATA_DIR)/,transactions.parquet card_activity.parquet merchant_risk.parquet)
.PHONY: data
data: $(DATA_DIR)/transactions.parquet ## simulate the transaction history and feature tables
$(DATA_DIR)/transactions.parquet: $(call missing,$(DATA_FILES)) | $(UV)
	@$(SYNC) --quiet services/features
	@$(TIMED) "simulate the transaction history" $(FEATURES_PY) -m flywheel_core.sim history --out $(DATA_DIR) --size $(DATA_SIZE)

# Feast apply + materialize run again only when what they read changed: the feature definitions, the
# data, Feast's version (the lock file), or when the registry or online store is gone. The stamp lives
# in the data directory, so another DATA_DIR gets its own.
FEATURES_STAMP := $(DATA_DIR)/.features-applied
FEATURE_INPUTS := $(wildcard feature_repo/*.py) feature_repo/feature_store.yaml feature_repo/.feastignore \
  $(DATA_DIR)/transactions.parquet $(wildcard $(DATA_FILES)) services/features/uv.lock
.PHONY: features
features: $(FEATURES_STAMP) ## feast apply + materialize into the local online store (when its inputs changed)
$(FEATURES_STAMP): $(FEATURE_INPUTS) $(call missing,$(DATA_DIR)/registry.db $(DATA_DIR)/online_store.db) | $(UV)
	@$(SYNC) --quiet services/features
	@rm -f $@
	@$(TIMED) "feast apply" $(FEATURES_PY) -m flywheel_features apply
	@$(TIMED) "materialize the online store" $(FEATURES_PY) -m flywheel_features materialize
	@touch $@

# Not echoed: the trainer's first log line says what it does, and the command is three lines long.
.PHONY: train
train: features ## train and publish a model version if the model repo has none
	@$(SYNC) --quiet services/trainer services/drift
	@$(TRAIN) --if-empty

.PHONY: retrain
retrain: features ## train and publish the next model version (it takes traffic only when a route sends it some)
	@$(SYNC) --quiet services/trainer services/drift
	@$(TRAIN)

.PHONY: up
up: install train ## run the whole loop locally until Ctrl-C
	$(UV_PYTHON) scripts/up.py --model-repo $(MODEL_REPO) --data $(DATA_DIR) $(UP_ARGS)

# UP_ARGS: extra flags for scripts/up.py, e.g. UP_ARGS=--exit to stop after the summary.
UP_ARGS ?=
CANDIDATE ?= good
.PHONY: rollout
rollout: install train ## publish a candidate version and roll it out with a canary on the local stack (CANDIDATE=good|harmful)
	$(UV_PYTHON) scripts/rollout.py --candidate $(CANDIDATE) --model-repo $(MODEL_REPO) --data $(DATA_DIR)

.PHONY: soak
soak: install train ## 10 minutes of mixed traffic to the transformer, a dependency SIGKILLed every minute: no lost events, flat memory
	$(UV_PYTHON) scripts/soak.py --model-repo $(MODEL_REPO) --data $(DATA_DIR) $(SOAK_ARGS)

# SOAK_ARGS: extra flags for scripts/soak.py, e.g. SOAK_ARGS='--duration 180' (see scripts/soak.py --help).
SOAK_ARGS ?=

.PHONY: flywheel
flywheel: install train ## the closed loop on a copy of the data: concept drift, labels, retraining, gates, canary; HTML timeline
	$(UV_PYTHON) scripts/flywheel.py --model-repo $(MODEL_REPO) --data $(DATA_DIR) $(LOOP_ARGS)

# LOOP_ARGS: extra flags for scripts/flywheel.py, e.g. LOOP_ARGS='--scenario none' (see its --help).
LOOP_ARGS ?=

.PHONY: plugin
plugin: $(UV) ## install `kubectl flywheel` (the ModelRollout plugin) with uv tool install, onto uv's tool bin dir
	$(UV) tool install --force --reinstall ./services/controller
	@echo "kubectl-flywheel is in $$($(UV) tool dir --bin); with that on PATH: kubectl flywheel --help"

.PHONY: test
test: install lock-check lint test-unit test-integration test-cluster ## every test

# `make install` syncs with --frozen (fast, and never rewrites a lock); this catches a lock file that no
# longer matches its pyproject.toml or a path dependency's (a dependency added without `make lock`).
.PHONY: lock-check
lock-check: $(UV) ## every project's uv.lock matches its pyproject.toml (and its path dependencies')
	@for project in $(PROJECTS); do \
	  (cd $$project && $(UV) lock --check --quiet) || { echo "$$project/uv.lock is stale: run make lock" >&2; exit 1; }; \
	done

# Lint and types, zero findings: ruff (ruff.toml) on every Python file, then mypy (mypy.ini) on each project's
# src/ with that project's .venv as the environment to check against (the services' dependencies conflict, so
# no one environment holds them all). tests/.venv holds the pinned ruff and mypy. Each project has its own mypy
# cache: the projects pin different versions of the same libraries.
.PHONY: lint
lint: | $(UV) ## ruff on the whole tree, mypy on every project's src/ (zero findings)
	@$(SYNC) --quiet tests $(SERVICE_PROJECTS)
	tests/.venv/bin/ruff check .
	@for project in $(SERVICE_PROJECTS); do \
	  echo "==> mypy $$project"; \
	  tests/.venv/bin/mypy --config-file mypy.ini --cache-dir .mypy_cache/$$(basename $$project) \
	    --python-executable $$project/.venv/bin/python $$project/src; \
	done

.PHONY: test-unit
test-unit: ## unit tests, each project in its own environment
	@for project in $(SERVICE_PROJECTS); do \
	  echo "==> pytest $$project"; \
	  (cd $$project && .venv/bin/python -m pytest -q); \
	done

.PHONY: test-integration
test-integration: ## the local stack: real processes over loopback HTTP
	@# Debian's redis-server, for the chart's Redis online store test (it fails without it when CI=true).
	@hack/test/redis-server.sh >/dev/null || true
	cd tests && .venv/bin/python -m pytest -q

.PHONY: test-cluster
test-cluster: cluster-build ## a real control plane (etcd, kube-apiserver, controllers, kwok)
	cd tests/cluster && .venv/bin/python -m pytest -q

.PHONY: cluster-build
cluster-build: ## build the pinned control plane, kwok, kubectl, helm, skaffold, dockerfile-lint, KServe's manager (cached)
	hack/cluster/build.sh

.PHONY: cluster-up
cluster-up: cluster-build ## start the local control plane in the background; prints the KUBECONFIG export
	hack/cluster/up.sh

.PHONY: cluster-down
cluster-down: ## stop the local control plane
	hack/cluster/down.sh

# The Secrets manifests/flywheel.yaml expects to exist (a rendered file must not carry generated credentials):
# chart value that names it = Secret name, key.
MANIFEST_SECRETS := router.auth.existingSecret=flywheel-router-token:token \
  redis.auth.existingSecret=flywheel-redis-auth:password \
  features.auth.read.existingSecret=flywheel-features-read-token:token \
  features.auth.write.existingSecret=flywheel-features-write-token:token \
  transformer.auth.debug.existingSecret=flywheel-transformer-debug-token:token \
  modelRepo.signing.existingSecret=flywheel-model-signing-token:token
MANIFEST_SETS := $(foreach s,$(MANIFEST_SECRETS),--set $(firstword $(subst :, ,$(s))))
.PHONY: manifests
manifests: cluster-build ## copy manifests/crds/ into the chart and re-render manifests/flywheel.yaml
	rm -f charts/flywheel/crds/*.yaml && cp manifests/crds/*.yaml charts/flywheel/crds/
	{ printf '%s\n' \
	  '# Rendered from charts/flywheel with default values but every credential from a Secret you create; do not edit.' \
	  '# Regenerate with `make manifests`:' \
	  '#   helm template flywheel charts/flywheel --namespace flywheel --kube-version 1.36.1 --skip-tests --include-crds \' \
	  '#     $(MANIFEST_SETS)' \
	  '# First, create the Secrets (tests/cluster/test_chart.py checks this file):'; \
	  for s in $(MANIFEST_SECRETS); do \
	    name=$${s#*=}; key=$${name#*:}; name=$${name%%:*}; \
	    printf '#   kubectl -n flywheel create secret generic %s --from-literal=%s="$$(openssl rand -hex 32)"\n' "$$name" "$$key"; \
	  done; \
	  "$$(hack/cluster/build.sh)/helm" template flywheel charts/flywheel --namespace flywheel \
	    --kube-version 1.36.1 --skip-tests --include-crds $(MANIFEST_SETS); \
	} > manifests/flywheel.yaml.tmp
	mv manifests/flywheel.yaml.tmp manifests/flywheel.yaml

.PHONY: bench-deps
bench-deps: ## the load tool (wrk), taskset, nginx (bench/router's reference proxy) and redis-server, from Debian's packages
	@command -v wrk >/dev/null && command -v taskset >/dev/null && command -v nginx >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq wrk util-linux nginx; }
	@hack/test/redis-server.sh >/dev/null

.PHONY: bench
bench: install bench-deps train ## benchmarks (figures in bench/results/, summary in docs/benchmarks.md)
	$(UV_PYTHON) bench/predictor/run.py --model-repo $(MODEL_REPO)
	$(UV_PYTHON) bench/router/run.py --model-repo $(MODEL_REPO)
	tests/.venv/bin/python bench/e2e/run.py --model-repo $(MODEL_REPO) --data $(DATA_DIR)
	services/drift/.venv/bin/python bench/drift/run.py
	$(UV_PYTHON) bench/features/online_stores.py

# Tool caches the project's tools write inside the checkout (pytest, ruff, mypy, hypothesis, import-linter, Python).
TOOL_CACHES := __pycache__ .pytest_cache .ruff_cache .mypy_cache .hypothesis .import_linter_cache
# The model repository loses its published versions (so the next `make up` trains v1) but keeps its
# committed README.md. Bench figures (bench/results/) are committed and stay.
.PHONY: clean
clean: ## remove what the project generated: data, published models, logs, every .venv, .tools/, tool caches
	@if [ -f .run/cluster/state.json ]; then hack/cluster/down.sh; fi
	rm -rf $(DATA_DIR) .run feature_repo/data $(TOOLS) $(foreach p,$(PROJECTS),$(p)/.venv)
	if [ -d $(MODEL_REPO) ]; then find $(MODEL_REPO) -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +; fi
	find . -path ./.git -prune -o -type d \( $(patsubst %,-name % -o,$(TOOL_CACHES)) -name '*.egg-info' \) \
	  -prune -exec rm -rf {} +

.PHONY: distclean
distclean: ## clean, and empty the caches outside the checkout the project fills (uv, Go, control plane); DRY_RUN=1 lists them
	@if [ -f .run/cluster/state.json ]; then hack/cluster/down.sh; fi
	@UV=$(UV) hack/make/distclean.sh $(if $(DRY_RUN),--dry-run)
	$(if $(DRY_RUN),,@$(MAKE) --no-print-directory clean)
