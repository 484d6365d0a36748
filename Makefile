# static-dicomweb: every target sets up what it needs (.venv/ from the pinned files).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo
PORT ?= 8080

.PHONY: help venv demo test unit lint typecheck bench serve constraints clean

help:
	@echo "make demo       sample CT -> static DICOMweb site in $(DEMO)/site, validated"
	@echo "make test       lint, type check and the whole test suite"
	@echo "make bench      conversion speed vs the three-copy cp -r floor (docs/benchmarks.md)"
	@echo "make serve      serve $(DEMO)/site on http://127.0.0.1:$(PORT)/"

$(STAMP): requirements.txt requirements-dev.txt constraints-airflow.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-r requirements.txt -r requirements-dev.txt -c constraints-airflow.txt
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/static-dicomweb sample $(DEMO)/input
	$(BIN)/static-dicomweb convert $(DEMO)/input --out $(DEMO)/site --workers 2
	$(BIN)/static-dicomweb validate $(DEMO)/site
	@echo
	@echo "SITE: $(CURDIR)/$(DEMO)/site"
	@echo "Serve it:  $(BIN)/static-dicomweb serve $(DEMO)/site --port $(PORT)   (or: make serve)"
	@echo "Then open: http://127.0.0.1:$(PORT)/studies  (the DICOMweb root is http://127.0.0.1:$(PORT)/)"

serve: $(STAMP)
	$(BIN)/static-dicomweb serve $(DEMO)/site --host 127.0.0.1 --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check include tests bench dags plugins

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

test: lint typecheck
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/bench_convert.py --json .bench/results.json

constraints: $(STAMP)
	{ head -2 constraints-airflow.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^static-dicomweb'; } > constraints.tmp
	mv constraints.tmp constraints-airflow.txt

clean:
	rm -rf $(DEMO) .bench .pytest_cache .mypy_cache .ruff_cache
