# static-dicomweb: every target sets up what it needs (.venv/ from the pinned files).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo
PORT ?= 8080
# Airflow for the demo and `make airflow`: a project-local home with SQLite.  .airflow/airflow.cfg
# is written from include/static_dicomweb_airflow/airflow.cfg.in (this repository's DAGs and
# plugins, no examples, OpenLineage into demo/openlineage.jsonl, the api-server on 127.0.0.1),
# so plain `AIRFLOW_HOME=.airflow airflow ...` commands agree with these targets
AIRFLOW_PORT ?= 8090
AIRFLOW := AIRFLOW_HOME=$(CURDIR)/.airflow $(BIN)/airflow

.PHONY: help venv airflow airflow-cfg demo test unit lint typecheck bench bench-aggregate bench-cli serve view constraints clean \
	ohif-setup monailabel-setup nginx-setup test-clients e2e-annotation

help:
	@echo "make demo       sample CT -> the dicomweb_site Airflow DAG -> $(DEMO)/site, validated"
	@echo "make test       lint, type check and the whole test suite"
	@echo "make e2e-annotation  the spine annotation loop against a real MONAI Label (prints DICE:)"
	@echo "make bench      conversion speed vs the three-copy cp -r floor (docs/benchmarks.md)"
	@echo "make bench-cli  the whole static-dicomweb convert process on NLST-like headers vs the same floor"
	@echo "make serve      serve $(DEMO)/site on http://127.0.0.1:$(PORT)/"
	@echo "make airflow    the Airflow UI on http://127.0.0.1:$(AIRFLOW_PORT)/ with this repository's DAGs"
	@echo "make view       the same, with the OHIF viewer at http://127.0.0.1:$(PORT)/viewer/"

$(STAMP): requirements.txt requirements-dev.txt constraints-airflow.txt pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v[:2] == (3, 11) and v >= (3, 11, 5) else \
		"Python 3.11.5 or a later 3.11 is required (the pinned Airflow needs it), found " + sys.version.split()[0] \
		+ ": set PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-r requirements.txt -r requirements-dev.txt -c constraints-airflow.txt
	touch $@

venv: $(STAMP)

# rewritten every time (its secrets and the password are kept): an older .airflow/airflow.cfg,
# e.g. Airflow's own defaults, does not survive
airflow-cfg: $(STAMP)
	$(BIN)/python -m static_dicomweb_airflow.home --home $(CURDIR)/.airflow --port $(AIRFLOW_PORT) > /dev/null

# api-server, scheduler, dag-processor and triggerer (LocalExecutor, SQLite) until Ctrl-C
airflow: airflow-cfg
	$(AIRFLOW) db migrate > .airflow/db.log 2>&1 || { tail -20 .airflow/db.log; exit 1; }
	AIRFLOW_HOME=$(CURDIR)/.airflow $(BIN)/python -m static_dicomweb_airflow.pools
	mkdir -p $(DEMO)
	AIRFLOW_HOME=$(CURDIR)/.airflow $(BIN)/python -m static_dicomweb_airflow.local

demo: $(STAMP) airflow-cfg
	$(BIN)/static-dicomweb sample $(DEMO)/input
	$(AIRFLOW) db migrate > $(DEMO)/airflow-db.log 2>&1 || { tail -20 $(DEMO)/airflow-db.log; exit 1; }
	AIRFLOW_HOME=$(CURDIR)/.airflow $(BIN)/python -m static_dicomweb_airflow.pools
	@echo "airflow dags test dicomweb_site (source $(DEMO)/input, destination $(DEMO)/site) ..."
	@$(AIRFLOW) dags test dicomweb_site \
		-c '{"source": "$(CURDIR)/$(DEMO)/input", "destination": "$(CURDIR)/$(DEMO)/site", "skip_localizers": false}' \
		> $(DEMO)/dag-run.log 2>&1 || { tail -40 $(DEMO)/dag-run.log; exit 1; }
	@grep -q "state=success, run_type" $(DEMO)/dag-run.log || { grep -E "error|Error" $(DEMO)/dag-run.log | tail -20; echo "the DAG run failed; log: $(DEMO)/dag-run.log"; exit 1; }
	@echo "DAG run succeeded (log: $(DEMO)/dag-run.log; OpenLineage events: $(DEMO)/openlineage.jsonl)"
	$(BIN)/static-dicomweb validate $(DEMO)/site
	@echo
	@echo "SITE: $(CURDIR)/$(DEMO)/site"
	@echo "View it:   make view, then open the VIEWER URL below (OHIF on the site)"
	@echo "VIEWER: http://127.0.0.1:$(PORT)/viewer/  (the DICOMweb root for other clients is http://127.0.0.1:$(PORT)/)"

serve: $(STAMP)
	$(BIN)/static-dicomweb serve $(DEMO)/site --host 127.0.0.1 --port $(PORT)

# OHIF (its published build, clients/ohif/) at /viewer/ of the same server as $(DEMO)/site
view: $(STAMP)
	@test -d $(DEMO)/site || { echo "no $(DEMO)/site: run make demo first"; exit 2; }
	@bash clients/ohif/setup.sh --build-only
	@echo "VIEWER: http://127.0.0.1:$(PORT)/viewer/  (the DICOMweb root is http://127.0.0.1:$(PORT)/)"
	$(BIN)/static-dicomweb serve $(DEMO)/site --viewer --host 127.0.0.1 --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check include tests bench dags plugins

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

test: lint typecheck ohif-setup monailabel-setup nginx-setup
	$(BIN)/python -m pytest

# Debian's nginx and its njs module for tests/test_nginx.py (and wrk for bench/bench_nginx.py)
nginx-setup:
	bash scripts/nginx.sh --wrk > /dev/null

# OHIF v3 (its published build) in Debian's headless Chromium: clients/ohif/README.md
ohif-setup:
	bash clients/ohif/setup.sh

# MONAI Label 0.8.5 in its own virtualenv (8.3 GB, ~3.5 min the first time): clients/monailabel/README.md
monailabel-setup:
	bash clients/monailabel/setup.sh

test-clients: $(STAMP) ohif-setup monailabel-setup
	$(BIN)/python -m pytest -m clients

# sample -> dicomweb_site -> MONAI Label -> labels -> spine_training -> monailabel_refresh (docs/annotation.md)
e2e-annotation: $(STAMP) monailabel-setup
	$(BIN)/python -m pytest tests/test_annotation_loop.py -s -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python bench/bench_convert.py --json .bench/results.json

bench-aggregate: $(STAMP)
	$(BIN)/python bench/bench_aggregate.py --json .bench/aggregate.json

# the whole `static-dicomweb convert` process on NLST-like headers vs the same floor (docs/benchmarks.md)
bench-cli: $(STAMP)
	$(BIN)/python bench/bench_cli.py --json .bench/cli.json

constraints: $(STAMP)
	{ head -2 constraints-airflow.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^static-dicomweb'; } > constraints.tmp
	mv constraints.tmp constraints-airflow.txt

clean:
	rm -rf $(DEMO) .bench .airflow .pytest_cache .mypy_cache .ruff_cache
