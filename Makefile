# pushreach: the two commands of the README's quick start are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint-protos protos bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the package metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test,bench]"
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

## run: set up and start the service on its embedded defaults (SQLite, console SMS)
run: $(VENV)/.installed
	$(BIN)/pushreach serve

## test: set up and run the whole test suite (includes the generated-code drift check)
test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -p no:cacheprovider

## lint-protos: buf lint (STANDARD) on protos/
lint-protos: node_modules/.installed
	npx --no-install buf lint

## protos: regenerate clients/python/pushreach/v1 from protos/
protos: $(VENV)/.installed
	$(BIN)/python scripts/gen_protos.py

## bench: run the benchmarks in bench/ and print their figures
bench: $(VENV)/.installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules .pytest_cache
