# Two entry points for a fresh machine (Python 3.11 + pip): `make run` and `make test`.
# Both create the virtual environment .venv first (torch comes as the pinned pair below).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.14.1 torchvision==0.29.1
CORES ?= 2

.PHONY: run test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

## run: the whole detection workflow on the embedded default dataset; prints the summary table
run: $(BIN)/.installed
	$(BIN)/snakemake --cores $(CORES)

## test: unit tests, the Snakemake lint and an end-to-end run on a tiny config
test: $(BIN)/.installed
	$(BIN)/python -m pytest -n $(CORES) --dist loadscope

lint: $(BIN)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake
