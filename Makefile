# Two entry points: `make demo` and `make test`. Both create .venv from requirements.txt.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= $(CURDIR)/demo
PYTEST_ARGS ?=

.PHONY: venv demo test lint clean

venv: $(STAMP)

$(STAMP): requirements.txt beam/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	$(VENV)/bin/uv pip install --python $(PY) -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(PY) -m imagenet_beam generate --manual_dir=$(DEMO_DIR)/manual --awkward
	$(PY) -m imagenet_beam convert --manual_dir=$(DEMO_DIR)/manual --data_dir=$(DEMO_DIR)/data \
		--splits=train,validation,test --file_format=tfrecord --runner=DirectRunner \
		--direct_running_mode=multi_processing --direct_num_workers=2
	$(PY) -m imagenet_beam verify $(DEMO_DIR)/data/imagenet2012/5.1.0

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check beam tests

clean:
	rm -rf $(VENV) $(DEMO_DIR)
