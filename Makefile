# nuke_crawl: `make demo` runs the whole job on embedded defaults; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench lint clean scrapyd deploy

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: venv
	$(PY) -m nuke_crawl.demo.run --fresh

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) bench/bench_org.py

# A local scrapyd node configured by scrapyd.conf (127.0.0.1:6800, folders in .scrapyd/);
# `make deploy` sends the project to it (scrapy.cfg [deploy]). docs/scale.md
scrapyd: venv
	mkdir -p .scrapyd
	$(VENV)/bin/scrapyd --nodaemon --pidfile=

deploy: venv
	$(VENV)/bin/scrapyd-deploy

clean:
	rm -rf demo-data nuke.db images .pytest_cache
