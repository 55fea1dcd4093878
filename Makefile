# Two entry points: `make demo` and `make test`. Both create .venv from requirements.txt.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= $(CURDIR)/demo
PYTEST_ARGS ?=

.PHONY: venv demo demo-cli docs-report ui browser test lint bench bench-scaling clean

venv: $(STAMP)

$(STAMP): requirements.txt beam/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	$(VENV)/bin/uv pip install --python $(PY) --compile-bytecode -r requirements.txt
	touch $(STAMP)

# The DAG, as a user runs it locally: SQLite Airflow DB, DirectRunner, generated input.
AIRFLOW_ENV := AIRFLOW_HOME=$(DEMO_DIR)/airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins AIRFLOW__CORE__LOAD_EXAMPLES=False \
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH
DEMO_CONF := {"manual_dir": "$(DEMO_DIR)/manual", "data_dir": "$(DEMO_DIR)/data", \
	"splits": ["train", "validation", "test"], "test_patch": "ILSVRC2012_img_test_patch_v10102019.tar", \
	"verify_checksums": false, "num_workers": 2}

demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(PY) -m imagenet_beam generate --manual_dir=$(DEMO_DIR)/manual --awkward
	$(AIRFLOW_ENV) airflow db migrate > $(DEMO_DIR)/airflow-db-migrate.log
	$(AIRFLOW_ENV) airflow dags test imagenet2012 --conf '$(DEMO_CONF)' > $(DEMO_DIR)/dag-test.log 2>&1 \
		|| (tail -50 $(DEMO_DIR)/dag-test.log; exit 1)
	grep -E "DAG TEST\] end task|Dag run in" $(DEMO_DIR)/dag-test.log | sed 's/ *\[airflow.*//'
	$(PY) -m imagenet_beam verify $(DEMO_DIR)/data/imagenet2012/5.1.0
	@echo "report: $(DEMO_DIR)/data/imagenet2012/5.1.0/report.html (open it in a browser; report.png beside it)"

# Without Airflow: the conversion CLI alone on the same kind of input.
demo-cli: $(STAMP)
	rm -rf $(DEMO_DIR)-cli
	$(PY) -m imagenet_beam generate --manual_dir=$(DEMO_DIR)-cli/manual --awkward --test_archives=patched
	$(PY) -m imagenet_beam convert --manual_dir=$(DEMO_DIR)-cli/manual --data_dir=$(DEMO_DIR)-cli/data \
		--splits=train,validation,test --file_format=tfrecord --verify_checksums=false \
		--runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2
	$(PY) -m imagenet_beam verify $(DEMO_DIR)-cli/data/imagenet2012/5.1.0

# docs/report.png, the README's picture: a conversion of a generated input, its own report.
REPORT_DEMO := $(DEMO_DIR)-report
docs-report: $(STAMP)
	rm -rf $(REPORT_DEMO)
	$(PY) -m imagenet_beam generate --manual_dir=$(REPORT_DEMO)/manual --awkward \
		--broken=truncated,not_an_image --num_classes=120 --train_per_class=10 \
		--num_validation=300 --num_test=40 --image_size=96x72
	$(PY) -m imagenet_beam convert --manual_dir=$(REPORT_DEMO)/manual --data_dir=$(REPORT_DEMO)/data \
		--verify_checksums=false --on_corrupt=skip --num_shards=4 --runner=DirectRunner > /dev/null
	cp $(REPORT_DEMO)/data/imagenet2012/5.1.0/report.png docs/report.png
	@echo "wrote docs/report.png (the whole page: $(REPORT_DEMO)/data/imagenet2012/5.1.0/report.html)"

# The Airflow UI on the demo's DB (runs `make demo` first when there is none): api-server,
# scheduler, dag-processor and triggerer via `airflow standalone`, user admin / admin, at
# http://127.0.0.1:$(UI_PORT)/ ("ImageNet datasets" in the navigation; each run's
# "ImageNet dataset" tab). The trigger form defaults to the demo's input and output.
UI_PORT ?= 8080
UI_ENV := $(AIRFLOW_ENV) AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=$(DEMO_DIR)/airflow/ui-passwords.json \
	AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False AIRFLOW__API__HOST=127.0.0.1 \
	AIRFLOW__API__PORT=$(UI_PORT) \
	AIRFLOW__API__BASE_URL=http://127.0.0.1:$(UI_PORT)/ IMAGENET2012_SCHEDULE= \
	IMAGENET_MANUAL_DIR=$(DEMO_DIR)/manual IMAGENET_DATA_DIR=$(DEMO_DIR)/data

ui: $(STAMP)
	test -f $(DEMO_DIR)/airflow/airflow.db || $(MAKE) demo
	echo '{"admin": "admin"}' > $(DEMO_DIR)/airflow/ui-passwords.json
	@echo "Airflow UI: http://127.0.0.1:$(UI_PORT)/  (login admin / admin; Ctrl-C stops it)"
	$(UI_ENV) airflow standalone

# Our conversion against TFDS's own builder on 20,000 and 40,000 realistic images and the
# full-count rehearsal (1,431,167 tiny images), the DAG under a real scheduler included
# (see README's Performance; about 45 minutes on 2 cores).
BENCH_ARGS ?=
# LAYOUT=imagefolder: the same images also as an extracted tree, beside the tarballs.
bench: $(STAMP)
	$(PY) -u -m benchmarks.run $(if $(LAYOUT),--layout=$(LAYOUT)) $(BENCH_ARGS)

# How cost grows with input size: 10k and 40k images, CLI only.
bench-scaling: $(STAMP)
	$(PY) -u -m benchmarks.run --sizes=10000,40000 --variants=passthrough,validate --skip_dag \
		--out=benchmarks/work/scaling.json

# Debian's Chromium and its driver for the browser tests (tests/ui), installed when missing
# and we may (root); otherwise those tests skip and say why.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				chromium chromium-driver >/dev/null) \
			|| echo "could not install chromium/chromium-driver: tests/ui will skip"; \
		else echo "chromium/chromium-driver missing and not root: tests/ui will skip"; fi; \
	fi

test: $(STAMP) browser
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check beam tests plugins dags benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) $(DEMO_DIR)-cli $(DEMO_DIR)-report
