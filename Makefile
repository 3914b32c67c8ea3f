# Two commands: `make run` serves the demo district with its scheduler; `make test` runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi
PORT ?= 5000
PYTEST_ARGS ?=

.PHONY: run test venv migrate seed bench bench-quick clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate requirements.txt requirements-dev.txt
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

migrate: venv
	$(FLASK) db upgrade

seed: migrate
	$(FLASK) demo seed --if-empty --events 2000

run: seed
	PORT=$(PORT) $(FLASK) serve

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench-quick: venv
	$(BIN)/python bench/locate.py --quick
	$(BIN)/python bench/calendar.py --quick
	$(BIN)/python bench/sweep.py --quick
	$(BIN)/python bench/intake.py --quick
	$(BIN)/python bench/hotline.py --quick

bench: venv
	$(BIN)/python bench/locate.py
	$(BIN)/python bench/calendar.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/hotline.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
