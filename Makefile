# The two commands of the README: `make serve` (main job) and `make test` (the whole suite, as CI runs it).
PY ?= python3
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: setup serve test lint unit
setup:
	bash scripts/setup.sh

serve: setup
	dsd models distill   # once: trains and caches the SmolLM2 draft (~8 min on 2 cores)
	dsd serve

lint:
	ruff check .
	lint-imports

test: setup lint
	@start=$$(date +%s); \
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	echo "test suite wall time: $$(( $$(date +%s) - start ))s"; exit $$rc

unit:
	$(PY) -m pytest -m "not cluster and not slow" $(PYTEST_ARGS)
