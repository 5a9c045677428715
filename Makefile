# labelwright: `make demo` runs the main job on a bundled real sample; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SERVICES := gateway preprocess labeler splitter trainer evaluator
PACKAGES := shared $(addprefix services/,$(SERVICES))
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast lint bench-label bench-preprocess bench-duplicates stack compose-config clean

setup: $(STAMP)

$(STAMP): requirements-dev.txt $(addsuffix /pyproject.toml,$(PACKAGES))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt \
		--config-settings editable_mode=compat $(addprefix -e ,$(PACKAGES))
	touch $@

demo-data: | $(STAMP)
	$(BIN)/python scripts/sample_digits.py demo-data --seeds-per-class 10

demo: setup demo-data
	$(BIN)/labelwright run demo-data --out demo-out

test: setup
	$(BIN)/python -m pytest -ra

test-fast: setup
	$(BIN)/python -m pytest -ra -m "not slow and not broker"

lint: setup
	$(BIN)/ruff check .

stack: setup
	$(BIN)/labelwright stack

compose-config:
	docker-compose config -q

FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

$(FASHION):
	apt-get install -y dataset-fashion-mnist || sudo apt-get install -y dataset-fashion-mnist

bench-label: setup $(FASHION)
	$(BIN)/python benchmarks/bench_label.py


clean:
	rm -rf demo-out demo-data labelwright-data labelwright.db .pytest_cache

bench-preprocess: setup $(FASHION)
	$(BIN)/python benchmarks/bench_preprocess.py

bench-duplicates: setup $(FASHION)
	$(BIN)/python benchmarks/bench_duplicates.py --tune --scale 100000
