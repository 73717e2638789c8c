# Two entry points for a fresh machine (see README):
#   make demo   installs everything and runs the main job on the embedded tiny model
#   make test   installs everything and runs the test suite (what CI runs)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test lint report clean

$(BIN)/hrv: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# the CPU machines here serve torch 2.14.1 / torchvision 0.29.1 from local disk
	$(BIN)/pip install "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -e ".[workflow,dev]"
	touch $(BIN)/hrv

install: $(BIN)/hrv

demo: install
	$(BIN)/snakemake --cores 2
	$(BIN)/snakemake --report results/demo/report.html

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests workflow benchmarks
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake resources/models
