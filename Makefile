# segwatch — set-up and checks. Two commands on a fresh machine: `make demo`, `make test`.
PYTHON ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
ANVIL_VERSION := 1.7.1
ANVIL_STAMP   := .tools/.anvil-$(ANVIL_VERSION)
OIDC_STAMP    := tests/oidc/node_modules/.installed
AXE_STAMP     := tests/axe/node_modules/.installed
NODES_STAMP   := tests/evmnodes/node_modules/.installed

.PHONY: install demo console test lint typecheck unit bench postgres litecoind chromium oidc-provider axe evm-nodes container-tools lock audit clean

# Every dependency from the hashed lock (pip checks each file against its hash), then
# segwatch itself without dependencies and without build isolation (setuptools is in the
# lock too), so nothing is installed unpinned.
$(VENV)/.installed: pyproject.toml requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Regenerate the hashed lock files from pyproject.toml; pins already in a lock are kept
# (UPGRADE=1 takes the newest releases). requirements.lock: what segwatch needs to run
# (the container image); requirements-build.lock: setuptools, to build it;
# requirements-dev.lock: both, plus the test and lint tools (make install, make test).
COMPILE = $(VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade)
lock: $(VENV)/.installed
	$(COMPILE) -o requirements.lock pyproject.toml
	$(COMPILE) -o requirements-build.lock requirements-build.in
	$(COMPILE) --extra dev -o requirements-dev.lock pyproject.toml requirements-build.in

# pip-audit over the pins (scripts/audit_deps.py): a known vulnerability fails; a
# vulnerability database that cannot be reached is reported, not failed on.
audit: $(VENV)/.installed
	$(PY) scripts/audit_deps.py requirements-dev.lock

# anvil ships as a binary inside its npm package (no download from elsewhere).
$(ANVIL_STAMP):
	mkdir -p .tools
	cd .tools && npm install --no-audit --no-fund --silent --prefix . @foundry-rs/anvil@$(ANVIL_VERSION)
	touch $@

# Litecoin Core (regtest) for the UTXO tests, from Debian's packages.
litecoind:
	@command -v litecoind >/dev/null || { \
	  command -v apt-get >/dev/null && (apt-get update -qq && apt-get install -y -qq litecoind); } \
	  || echo "warning: litecoind could not be installed (UTXO node tests will fail under CI)"

# Headless Chromium for the report.html and console tests, from Debian's packages.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  command -v apt-get >/dev/null && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium); } \
	  || echo "warning: chromium could not be installed (the browser tests will fail under CI)"

# podman, buildah, runc and debootstrap for the container test (tests/container), from Debian.
container-tools:
	@command -v podman >/dev/null && command -v buildah >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || { \
	  command -v apt-get >/dev/null && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap); } \
	  || echo "warning: podman/buildah/runc/debootstrap could not be installed (the container test will fail under CI)"

install: $(VENV)/.installed $(ANVIL_STAMP)

# A certified OpenID Provider (npm oidc-provider, pinned in tests/oidc/package-lock.json)
# that the sign-in tests start on loopback.
$(OIDC_STAMP): tests/oidc/package.json tests/oidc/package-lock.json
	cd tests/oidc && npm ci --no-audit --no-fund --silent
	touch $@

oidc-provider: $(OIDC_STAMP)

# axe-core (npm, pinned in tests/axe/package-lock.json): the console's accessibility check.
$(AXE_STAMP): tests/axe/package.json tests/axe/package-lock.json
	cd tests/axe && npm ci --no-audit --no-fund --silent
	touch $@

axe: $(AXE_STAMP)

# Two more EVM node implementations for the shared adapter tests (npm hardhat@2 and
# ganache@7, pinned in tests/evmnodes/package-lock.json).
$(NODES_STAMP): tests/evmnodes/package.json tests/evmnodes/package-lock.json
	cd tests/evmnodes && npm ci --no-audit --no-fund --silent
	touch $@

evm-nodes: $(NODES_STAMP)

# The local PostgreSQL server the store tests use (already running on this machine kind).
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 || { \
	  command -v pg_ctlcluster >/dev/null && \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start; } || true
	@pg_isready -h 127.0.0.1 -p 5432 || echo "warning: PostgreSQL is not reachable on 127.0.0.1:5432"

demo: install
	$(PY) scripts/demo.py

# The operator console over the demo's store (after `make demo`), on daemon.listen.
console: install
	SEGWATCH_DEMO_RPC=http://127.0.0.1:8545 \
	SEGWATCH_EXPORT__TRUSTED_KEYS="$$(cat demo/trusted-keys.json 2>/dev/null || echo '[]')" \
	$(PY) -m daemon.cli --config config/demo/segwatch.toml serve

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check daemon chains tests scripts

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# Both cores: each pytest-xdist worker starts its own anvil and litecoind, and every
# PostgreSQL test has its own schema.
test: install oidc-provider axe evm-nodes litecoind chromium container-tools postgres lint typecheck audit
	$(VENV)/bin/pytest -p no:cacheprovider -n auto

unit: $(VENV)/.installed
	$(VENV)/bin/pytest tests/unit

bench: install
	$(PY) tests/bench/bench_balances.py --wallets 2000
	$(PY) tests/bench/bench_cycle.py --wallets 100000
	$(PY) tests/bench/bench_utxo.py --addresses 2000 --esplora-addresses 500 --latency-ms 20 --concurrency 8,16
	$(PY) tests/bench/bench_detection.py --trials 20 --wallets 10000 --idle-seconds 60
	$(PY) tests/bench/bench_console.py --wallets 20000 --exceptions 2000 --requests 50
	$(PY) tests/bench/bench_startup.py --runs 20
	$(PY) tests/bench/bench_import.py --lines 2000000

clean:
	rm -rf $(VENV) .tools demo .mypy_cache .ruff_cache .pytest_cache tests/evmnodes/node_modules
