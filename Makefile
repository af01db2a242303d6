# nuke_crawl: `make demo` runs the whole job on embedded defaults; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo serve test bench corpus-report lint format clean scrapyd deploy

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: venv
	$(PY) -m nuke_crawl.demo.run --fresh

# The service on the demo's database: http://127.0.0.1:6810/ (read-only unless
# NUKE_ADMIN_TOKEN is set in the environment: `NUKE_ADMIN_TOKEN=... make serve`).
serve: venv
	DATABASE_URL=sqlite:///$(CURDIR)/demo-data/nuke.db NUKE_ALLOW_PRIVATE_NETWORKS=1 \
		$(PY) -m scrapy serve -s IMAGES_STORE=$(CURDIR)/demo-data/images $(SERVE_ARGS)

# The suite on PYTEST_WORKERS processes (pytest-xdist; tests marked `serial` run alone).
# One file, serially: `make test PYTEST_WORKERS=0 PYTEST_ARGS=tests/test_db.py`.
PYTEST_WORKERS ?= 3
test: venv
	$(PY) -m pytest -n $(PYTEST_WORKERS) --maxschedchunk 1 $(PYTEST_ARGS)

bench: venv
	$(PY) bench/bench_org.py

corpus-report: venv
	$(PY) bench/corpus_report.py

# ruff (format and lint) over the tree and mypy over the package; CI runs it.
lint: venv
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# A local scrapyd node configured by scrapyd.conf (127.0.0.1:6800, folders in .scrapyd/);
# `make deploy` sends the project to it (scrapy.cfg [deploy]). docs/scale.md
scrapyd: venv
	mkdir -p .scrapyd
	$(VENV)/bin/scrapyd --nodaemon --pidfile=

deploy: venv
	$(VENV)/bin/scrapyd-deploy

clean:
	rm -rf demo-data nuke.db images service-logs .pytest_cache
