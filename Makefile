# glucose-forecast: every target creates the virtualenv .venv when missing.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
GF := $(BIN)/glucose-forecast
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv demo test bench train tune pipeline katib k8s gateway serve webapp images lint clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml webapp/requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || \
		{ echo "Python 3.11 is required (found: $(PYTHON)); set PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all]' --constraint webapp/requirements.txt  # the web-app image's pins
	$(BIN)/pip check
	@touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the project with all extras

demo: $(STAMP)  ## tune, train and export every patient, then serve them and start the web app
	$(GF) demo

test: $(STAMP)  ## the whole test suite (what CI runs)
	$(BIN)/pytest -q

bench: $(STAMP)  ## accuracy, tuning/training time and serving speed, as a table (build/bench/)
	$(GF) bench $(BENCH_ARGS)

train: $(STAMP)  ## train and export every patient (tuned or default hyperparameters, by validation MAE)
	$(GF) train --all

tune: $(STAMP)  ## run each patient's Katib Experiment with the local executor
	$(GF) tune --all

pipeline: $(STAMP)  ## compile the KFP v2 pipeline to pipeline/glucose_forecast_pipeline.yaml
	$(GF) pipeline compile

katib: $(STAMP)  ## render one Katib Experiment per patient into build/katib/
	$(GF) katib render

k8s: $(STAMP)  ## render every kustomize overlay into build/k8s/<overlay>.yaml
	$(GF) k8s render

gateway: $(STAMP)  ## render the nginx gateway config into build/nginx/
	$(GF) gateway render

serve: $(STAMP)  ## two local model-server replicas over models/ behind the nginx gateway (foreground)
	$(GF) serve

webapp: $(STAMP)  ## the Streamlit app against the local gateway
	$(GF) webapp

images: $(STAMP)  ## build the serving image of every patient and the web app image (needs Docker)
	$(GF) images build

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .

clean:  ## remove generated output (keeps .venv)
	rm -rf build models .kale .pytest_cache
