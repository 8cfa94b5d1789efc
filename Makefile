# Both README commands create .venv on first use and install what they need; no root required.
# They install the exact versions of requirements.lock (what CI tests); `make lock` refreshes it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# Parallel test workers (pytest-xdist): the suite waits on servers far more than it computes,
# so 4 workers on 2 cores; 0 runs it in one process.
WORKERS ?= 4
# The SDK and CLI tests the newest and lowest lanes run: conformance with redis-py, the
# safety rules, key extraction, the private-API seam, and the one-shot commands.
LANE_TESTS := tests/unit/test_keys.py tests/unit/test_redis_compat.py tests/unit/test_config.py \
	tests/unit/test_router.py tests/unit/test_strategies.py tests/unit/test_cli_imports.py \
	tests/integration/test_keys_server.py tests/integration/test_redis_compat_streams.py \
	tests/integration/test_cluster_client.py tests/integration/test_async_client.py \
	tests/integration/test_compat_commands.py tests/integration/test_compat_pipeline.py \
	tests/integration/test_compat_pubsub.py tests/integration/test_sdk_safety.py \
	tests/e2e/test_cli_errors.py tests/e2e/test_cli_rebalance.py tests/e2e/test_cli_version.py

.PHONY: demo test test-fast test-newest test-lowest test-lanes lint lock bench clean

# Make's own lines go to stderr, so `make demo`'s stdout is the demo's JSON summary alone.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/python -m pip install -q -c $(LOCK) -e '.[dev,local]' >&2
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/slotpilot demo

lint: $(STAMP)
	$(BIN)/ruff check balancer controller tests bench
	$(BIN)/ruff format --check balancer controller tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# pytest exits 5 when it collected nothing; that is a failure of the suite, not a pass.
test: lint
	$(BIN)/python -m pytest -q -n $(WORKERS) --reruns 1 --reruns-delay 1; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The edit loop: socket-free unit tests only.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(WORKERS) tests/unit -m "not integration"

# Newest allowed releases of everything (no lock), as `pip install slotpilot[local]` gets today.
test-newest:
	rm -rf .venv-newest && $(PYTHON) -m venv .venv-newest
	.venv-newest/bin/python -m pip install -q '.[local,test]'
	.venv-newest/bin/python -m pip list --format=freeze | grep -iE '^(redis|pydantic|kubernetes|pybreaker)=='
	.venv-newest/bin/python -m pytest -q -p no:cacheprovider -n 2 --reruns 1 $(LANE_TESTS)

# The oldest releases pyproject allows for every direct dependency (uv's lowest-direct).
test-lowest: $(STAMP)
	rm -rf .venv-lowest && $(BIN)/uv venv -q --python $(BIN)/python .venv-lowest
	VIRTUAL_ENV=.venv-lowest $(BIN)/uv pip install -q --resolution lowest-direct '.[local,test]'
	.venv-lowest/bin/python -m pip list --format=freeze 2>/dev/null | grep -iE '^(redis|pydantic|kubernetes|pybreaker)==' || \
	VIRTUAL_ENV=.venv-lowest $(BIN)/uv pip list | grep -iE '^(redis|pydantic|kubernetes|pybreaker) '
	.venv-lowest/bin/python -m pytest -q -p no:cacheprovider -n 2 --reruns 1 $(LANE_TESTS)

test-lanes: test-newest test-lowest

# Refresh the lock: the newest releases pyproject allows, for Python 3.11+ on any platform.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra local --universal \
		--python-version 3.11 --upgrade -q --custom-compile-command "make lock" -o $(LOCK)

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .venv-newest .venv-lowest .pytest_cache .mypy_cache .ruff_cache
