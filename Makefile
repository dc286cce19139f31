# The two commands of the README: `make serve` (main job) and `make test` (the whole suite, as CI runs it).
PY ?= python3
export PATH := $(HOME)/.local/bin:$(PATH)

.PHONY: setup serve test lint unit
setup:
	bash scripts/setup.sh

serve:
	bash scripts/setup.sh --runtime   # pip only: serving needs neither the Go build nor a trained draft
	dsd serve   # model-free drafting by default; `dsd models distill` (optional) adds the trained draft

lint:
	ruff check .
	lint-imports

test: setup lint
	@start=$$(date +%s); \
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	echo "test suite wall time: $$(( $$(date +%s) - start ))s"; exit $$rc

unit:
	$(PY) -m pytest -m "not cluster and not slow" $(PYTEST_ARGS)
