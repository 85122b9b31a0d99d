# pushreach: the two commands of the README's quick start are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TS := clients/typescript

.PHONY: run test test-ts lint-protos breaking protos bench console clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the package metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test,bench]"
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

# The TypeScript client's own dependencies (and protoc-gen-es), from its lock file.
$(TS)/node_modules/.installed: $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm ci --silent --no-audit --no-fund
	touch $@

console/node_modules/.installed: console/package.json console/package-lock.json
	npm ci --prefix console --silent --no-audit --no-fund
	touch $@

CONSOLE_BUILT := server/pushreachd/http/console_static/app.js
$(CONSOLE_BUILT): console/node_modules/.installed console/build.mjs $(wildcard console/src/*)
	node console/build.mjs

## console: build the console's pages (served at /console/ on http_listen)
console: $(CONSOLE_BUILT)

## run: set up and start the service on its embedded defaults (SQLite, console SMS)
run: $(VENV)/.installed $(CONSOLE_BUILT)
	$(BIN)/pushreach serve

## test: set up and run the whole test suite (includes the generated-code drift check), then the
## TypeScript client's tests (node:test) against a real `pushreach serve`
test: $(VENV)/.installed node_modules/.installed $(TS)/node_modules/.installed $(CONSOLE_BUILT)
	$(BIN)/python -m pytest -q -p no:cacheprovider
	$(MAKE) --no-print-directory test-ts

## test-ts: build the TypeScript client and run its tests (needs .venv for `pushreach serve`)
test-ts: $(VENV)/.installed $(TS)/node_modules/.installed
	cd $(TS) && npm test

## lint-protos: buf lint (STANDARD) on protos/
lint-protos: node_modules/.installed
	npx --no-install buf lint

## breaking: buf breaking on every contract change against its parent, and the working tree against HEAD
breaking: node_modules/.installed
	bash scripts/check_breaking.sh

## protos: regenerate clients/python/pushreach/v1 and clients/typescript/src/gen from protos/
protos: $(VENV)/.installed node_modules/.installed $(TS)/node_modules/.installed
	$(BIN)/python scripts/gen_protos.py

## bench: run the benchmarks in bench/ and print their figures
bench: $(VENV)/.installed $(CONSOLE_BUILT)  # the console row loads the built pages
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) node_modules $(TS)/node_modules $(TS)/dist console/node_modules server/pushreachd/http/console_static .pytest_cache
