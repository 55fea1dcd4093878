"""The DAG's Dataflow submission, offline.

There is no GCP here, so the job is built and not submitted: the launcher the convert task
runs (`python -m imagenet_beam.beam_main` with exactly the command line the Beam operator
builds from the DAG's arguments) gets `--template_location`, with which Beam's
DataflowRunner does everything a submission does — builds the job graph, builds the
`beam/` package from `--setup_file`, stages it and the pipeline to the staging location,
writes the job request Dataflow would receive — except the call to the Dataflow API.
Staging and temp locations are on a real GCS server on localhost, and the test reads the
job request, the staged pipeline and the staged package back from it.

(Beam's `--dry_run` test option stops earlier: it returns before the job request is made —
no worker pool, machine type or service account in it — and before anything is staged.)
"""

from __future__ import annotations

import copy
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from tests.conftest import ROOT, gcs_client

# Airflow's environment (own AIRFLOW_HOME, SQLite DB) before anything imports Airflow, and
# the DAG as the DagBag parses it.
from tests.dags.conftest import airflow_db, imagenet_dag  # noqa: F401

PROJECT = "imagenet-test-project"
REGION = "europe-west4"
SERVICE_ACCOUNT = "imagenet-dataflow@imagenet-test-project.iam.gserviceaccount.com"
MACHINE_TYPE = "n2-highcpu-8"
MAX_WORKERS = 7
RUN_ID = "manual__2026-11-25T10:11:12.123456+00:00"
JOB_NAME_RULE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
# What the convert task's arguments may hold for Dataflow: every name reviewed, none secret.
DATAFLOW_OPTION_NAMES = {
    "project", "region", "temp_location", "staging_location", "service_account_email",
    "worker_machine_type", "max_num_workers", "setup_file", "job_name", "no_wait_until_finish",
}


def _params(dag, **conf) -> dict:
    """The run's params as Airflow resolves them: the DAG's defaults, the conf, its schema."""
    params = copy.deepcopy(dag.params)
    params.update(conf)
    return params.validate()


def _dataflow_conf(bucket: str, **overrides) -> dict:
    conf = {
        "manual_dir": f"{bucket}/manual",
        "data_dir": f"{bucket}/tfds",
        "splits": ["validation"],
        "verify_checksums": False,
        "test_patch": None,
        "runner": "DataflowRunner",
        "num_workers": MAX_WORKERS,
        "dataflow_project": PROJECT,
        "dataflow_region": REGION,
        "dataflow_temp_location": f"{bucket}/dataflow/tmp",
        "dataflow_staging_location": f"{bucket}/dataflow/staging",
        "dataflow_service_account": SERVICE_ACCOUNT,
        "dataflow_machine_type": MACHINE_TYPE,
    }
    conf.update(overrides)
    return conf


def _blob(url: str):
    """A google-cloud-storage blob for gs://bucket/name or storage.googleapis.com/bucket/name."""
    path = url.split("gs://", 1)[1] if url.startswith("gs://") else url.split(
        "storage.googleapis.com/", 1)[1]
    bucket, name = path.split("/", 1)
    return gcs_client().bucket(bucket).blob(name)


def _tree_state(path: str) -> dict[str, tuple[int, int]]:
    state = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            st = os.stat(full)
            state[os.path.relpath(full, path)] = (st.st_mtime_ns, st.st_size)
    return state


def _operator_command(kwargs: dict) -> tuple[object, list[str]]:
    """The convert task's operator for one split, as the DAG maps it, and the command line
    it runs: the provider's own option handling (DataflowConfiguration merged in, job name,
    labels) and its own dict → flags conversion."""
    from airflow.providers.apache.beam.hooks.beam import beam_options_to_args
    from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator

    from imagenet_airflow.tasks import BEAM_MAIN_MODULE

    op = BeamRunPythonPipelineOperator(
        task_id="convert",
        py_file=BEAM_MAIN_MODULE,
        py_options=["-m"],
        py_interpreter=sys.executable,
        **kwargs,
    )
    # The first steps of BeamRunPythonPipelineOperator.execute, up to starting the process.
    op._cast_dataflow_config()
    op.pipeline_options.setdefault("labels", {}).update({"airflow-version": "v3"})
    is_dataflow, job_name, variables, _, _ = op._init_pipeline_options(
        format_pipeline_options=True, job_name_variable_key="job_name"
    )
    assert is_dataflow and job_name == kwargs["pipeline_options"]["job_name"]
    variables["labels"] = [f"{k}={v}" for k, v in variables["labels"].items()]
    command = [
        op.py_interpreter, *op.py_options, op.py_file, f"--runner={op.runner}",
        *beam_options_to_args(variables),
    ]
    return op, command


@pytest.fixture(scope="module")
def dataflow_launch(gcs_server, imagenet_dag, tmp_path_factory):  # noqa: F811
    from imagenet_airflow import dataflow_launch as launch
    """The convert task's launcher for one split, run as the operator runs it, writing the
    job it would submit to the local GCS server instead of submitting it."""
    from imagenet_airflow import tasks
    from imagenet_beam import synthetic

    client = gcs_client()
    bucket_name = f"dataflow-job-{os.getpid()}-{int(time.time())}"
    client.create_bucket(bucket_name)
    bucket = f"gs://{bucket_name}"

    local = tmp_path_factory.mktemp("dataflow_manual")
    generated = synthetic.generate_manual_dir(
        str(local), splits=("validation",), num_validation=6, test_archives=()
    )
    for name in os.listdir(local):
        client.bucket(bucket_name).blob(f"manual/{name}").upload_from_filename(
            str(local / name)
        )

    # The package source the DAG ships, in a copy we can watch: the build must not touch it.
    source = tmp_path_factory.mktemp("package_source") / "beam"
    shutil.copytree(os.path.join(ROOT, "beam"), source,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist"))
    source_before = _tree_state(str(source))

    params = _params(imagenet_dag, **_dataflow_conf(bucket))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAGENET_BEAM_SETUP_FILE", str(source / "setup.py"))
        tasks.verify_archives(params, RUN_ID)  # the plan then knows their checks
        plan = tasks.plan_conversion(params, RUN_ID)
        kwargs = launch.convert_operator_kwargs(params, plan["jobs"])
        [job_kwargs] = kwargs
        # The connection the DAG names, as docker-compose.yaml defines it: no key, i.e.
        # Application Default Credentials (the operator's hook only looks it up here).
        mp.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", "google-cloud-platform://")
        op, command = _operator_command(job_kwargs)

    template = f"{bucket}/template/job.json"
    started = time.monotonic()
    proc = subprocess.run(
        [*command, f"--template_location={template}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "plugins")},
    )
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-5000:]
    return {
        "bucket": bucket,
        "params": params,
        "kwargs": job_kwargs,
        "operator": op,
        "command": command,
        "proc": proc,
        "seconds": seconds,
        "job": json.loads(_blob(template).download_as_bytes()),
        "source": str(source),
        "source_before": source_before,
        "generated": generated,
    }


def test_the_convert_task_defers_on_dataflow(dataflow_launch):
    kwargs = dataflow_launch["kwargs"]
    op = dataflow_launch["operator"]
    job_name = kwargs["pipeline_options"]["job_name"]
    assert kwargs["runner"] == "DataflowRunner"
    assert kwargs["deferrable"] is True and op.deferrable is True
    assert kwargs["gcp_conn_id"] == "google_cloud_default" == op.gcp_conn_id
    config = op.dataflow_config  # the provider's DataflowConfiguration, from our dict
    assert (config.job_name, config.append_job_name) == (job_name, False)
    assert (config.project_id, config.location) == (PROJECT, REGION)
    assert config.gcp_conn_id == "google_cloud_default"
    assert job_name == "imagenet2012-validation-manual-2026-11-25t10-11-12-123456-00-00"
    assert JOB_NAME_RULE.fullmatch(job_name)


def test_the_job_request_carries_the_dags_settings(dataflow_launch):
    job = dataflow_launch["job"]
    bucket = dataflow_launch["bucket"][len("gs://"):]
    params = dataflow_launch["params"]
    assert job["name"] == dataflow_launch["kwargs"]["pipeline_options"]["job_name"]
    assert job["type"] == "JOB_TYPE_BATCH"
    env = job["environment"]
    assert env["serviceAccountEmail"] == SERVICE_ACCOUNT
    assert env["tempStoragePrefix"].startswith(f"storage.googleapis.com/{bucket}/dataflow/tmp/")
    [pool] = env["workerPools"]
    assert pool["machineType"] == MACHINE_TYPE
    assert pool["autoscalingSettings"]["maxNumWorkers"] == MAX_WORKERS

    options = env["sdkPipelineOptions"]["options"]
    assert options["project"] == PROJECT and options["region"] == REGION
    assert options["service_account_email"] == SERVICE_ACCOUNT
    assert options["machine_type"] == MACHINE_TYPE
    assert options["max_num_workers"] == MAX_WORKERS
    assert options["temp_location"].startswith(f"gs://{bucket}/dataflow/tmp/")
    assert options["staging_location"].startswith(f"gs://{bucket}/dataflow/staging/")
    assert options["setup_file"].endswith("/setup.py")
    assert options["no_wait_until_finish"] is True
    assert "airflow-version=v3" in options["labels"]
    # The conversion's own flags reach the workers too.
    assert options["manual_dir"] == params["manual_dir"]
    assert options["data_dir"] == params["data_dir"]
    assert options["splits"] == "validation" and options["stage_only"] is True
    assert options["staging_dir"] == f"gs://{bucket}/tfds/imagenet2012/.5.1.0.incomplete"


def test_the_job_graph_is_index_plan_write(dataflow_launch):
    from apache_beam.portability.api import beam_runner_api_pb2

    options = dataflow_launch["job"]["environment"]["sdkPipelineOptions"]["options"]
    staged = _blob(options["pipelineUrl"]).download_as_bytes()
    graph = beam_runner_api_pb2.Pipeline.FromString(staged)
    names = {t.unique_name for t in graph.components.transforms.values()}
    assert {
        "IndexArchives", "IndexArchives/ListArchives", "IndexArchives/IndexMembers",
        "PlanShards", "PlanShards/GroupBySplit", "PlanShards/CutIntoShards",
        "WriteShards", "WriteShards/WriteShard",
    } <= names


def test_the_launcher_submits_without_waiting_and_logs_for_the_operator(dataflow_launch):
    from airflow.providers.google.cloud.hooks.dataflow import JOB_ID_PATTERN
    from apache_beam.runners.dataflow.internal import apiclient

    proc = dataflow_launch["proc"]
    output = proc.stdout + proc.stderr
    # Beam's Dataflow client logs at INFO; the operator finds the job id in that output.
    assert "A template was just created at location" in output
    assert "Created job with id" not in output  # nothing was submitted
    [line_format] = re.findall(
        r"'(Created job with id: \[%s\])'", inspect.getsource(apiclient)
    )
    match = JOB_ID_PATTERN.search("INFO x: " + line_format % "2026-11-25_01_02_03-123")
    assert match and match.group("job_id_python") == "2026-11-25_01_02_03-123"
    assert "staged ['validation']" in proc.stdout or "staged validation" in proc.stdout
    # No credential lookup against Google (it retries for ~30 s): the launcher is quick.
    assert dataflow_launch["seconds"] < 25, dataflow_launch["seconds"]


def test_the_staged_package_is_imagenet_beam_and_installs(dataflow_launch, tmp_path):
    packages = dataflow_launch["job"]["environment"]["workerPools"][0]["packages"]
    by_name = {p["name"]: p["location"] for p in packages}
    assert "workflow.tar.gz" in by_name, sorted(by_name)
    data = _blob(by_name["workflow.tar.gz"]).download_as_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
        pkg_info = sdist.extractfile(
            next(m for m in sdist.getmembers() if m.name.endswith("/PKG-INFO")
                 and m.name.count("/") == 1)
        ).read().decode()
    for module in ("pipeline", "run", "settings", "layout", "shards", "plan", "images",
                   "formats/tfds_schema", "metadata", "publish", "storage", "dataset", "beam_main",
                   "dataflow", "sources/__init__", "sources/tarballs", "sources/tar",
                   "formats/__init__", "formats/tfrecord", "formats/array_record"):
        assert f"imagenet_beam/{module}.py" in members, module
    assert "Name: imagenet-beam" in pkg_info or "Name: imagenet_beam" in pkg_info

    # What a Dataflow worker does with it: pip install, then import the pipeline.
    sdist_path = tmp_path / "workflow.tar.gz"
    sdist_path.write_bytes(data)
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(sdist_path)],
        check=True, capture_output=True, timeout=300,
    )
    proc = subprocess.run(
        [sys.executable, "-c",
         "import imagenet_beam, imagenet_beam.pipeline; print(imagenet_beam.__file__)"],
        capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    assert proc.stdout.strip().startswith(str(target)), proc.stdout


def test_the_package_is_built_outside_its_source_directory(dataflow_launch):
    # Parallel split launches build from one beam/ directory; setuptools writes its
    # egg-info and release tree there, so builds in place race (see imagenet_beam.dataflow).
    assert _tree_state(dataflow_launch["source"]) == dataflow_launch["source_before"]


def test_direct_runner_tasks_do_not_defer(imagenet_dag, tmp_path):  # noqa: F811
    from imagenet_airflow import dataflow_launch as launch
    from imagenet_airflow import tasks

    params = _params(
        imagenet_dag, manual_dir=str(tmp_path), data_dir=str(tmp_path / "out"),
        splits=["train", "validation"], num_workers=2,
    )
    jobs = tasks.conversion_jobs(params, {}, str(tmp_path / "staging"),
                                 RUN_ID)
    kwargs = launch.convert_operator_kwargs(params, jobs)
    # One job for both splits, in worker processes (one a worker) as the command line runs
    assert [k["pipeline_options"]["splits"] for k in kwargs] == ["train,validation"]
    assert kwargs[0]["pipeline_options"]["direct_running_mode"] == "multi_processing"
    assert kwargs[0]["pipeline_options"]["direct_num_workers"] == 2
    for k in kwargs:
        assert k["runner"] == "DirectRunner" and k["deferrable"] is False
        assert "dataflow_config" not in k
        assert not DATAFLOW_OPTION_NAMES & set(k["pipeline_options"])

    # Archives under run.THREADS_BELOW_BYTES in all: threads (worker processes would take
    # longer to start than the conversion); at that size or more, processes.
    from imagenet_beam import run
    from imagenet_beam.sources import SplitInput

    def mode(train_bytes: int) -> str:
        archives = {}
        for split, size in (("train", train_bytes), ("validation", 1000)):
            path = tmp_path / f"{split}.tar"
            with open(path, "wb") as f:
                f.truncate(size)  # sparse: the size is what counts
            archives[split] = SplitInput(split, str(path))
        [job] = tasks.conversion_jobs(params, archives, str(tmp_path / "staging"), RUN_ID)
        return job["direct_running_mode"]

    assert mode(1000) == "multi_threading"
    assert mode(run.THREADS_BELOW_BYTES) == "multi_processing"


def test_dataflow_options(imagenet_dag, monkeypatch):  # noqa: F811
    from imagenet_airflow import dataflow_launch as launch
    from imagenet_airflow import tasks
    from imagenet_beam import settings

    monkeypatch.setenv("IMAGENET_BEAM_SETUP_FILE", "/opt/airflow/beam/setup.py")
    bucket = "gs://b"
    params = _params(imagenet_dag, **_dataflow_conf(bucket, dataflow_staging_location=None,
                                                     splits=["train", "validation"]))
    jobs = tasks.conversion_jobs(params, {}, f"{bucket}/staging", RUN_ID)
    train, validation = (
        {k: v for k, v in job.items() if k in DATAFLOW_OPTION_NAMES} for job in jobs
    )
    assert validation == {
        "project": PROJECT,
        "region": REGION,
        "temp_location": f"{bucket}/dataflow/tmp",
        "staging_location": f"{bucket}/dataflow/tmp/staging",  # derived from temp
        "service_account_email": SERVICE_ACCOUNT,
        "worker_machine_type": MACHINE_TYPE,
        "max_num_workers": MAX_WORKERS,
        "setup_file": "/opt/airflow/beam/setup.py",
        "job_name": "imagenet2012-validation-manual-2026-11-25t10-11-12-123456-00-00",
        "no_wait_until_finish": True,
    }
    # Only reviewed option names: no credentials or keys ever travel in the options.
    for job in jobs:
        conversion = set(settings.BY_NAME)  # the conversion's own settings, one table
        assert set(job) <= DATAFLOW_OPTION_NAMES | conversion, set(job)
    assert train["job_name"] != validation["job_name"]

    # Defaults of the form: machine type n2-standard-4, staging under temp.
    defaults = _params(imagenet_dag, **{k: v for k, v in _dataflow_conf(bucket).items()
                                        if k not in ("dataflow_machine_type",
                                                     "dataflow_staging_location")})
    [job] = tasks.conversion_jobs(defaults, {}, f"{bucket}/staging",
                                  RUN_ID)
    assert job["worker_machine_type"] == "n2-standard-4"
    assert job["staging_location"] == f"{bucket}/dataflow/tmp/staging"

    with pytest.raises(ValueError, match="dataflow_project, dataflow_temp_location"):
        launch.dataflow_options({**params, "dataflow_project": None,
                                "dataflow_temp_location": None}, "train", RUN_ID)
    with pytest.raises(ValueError, match="manual_dir must be gs://"):
        launch.dataflow_options({**params, "manual_dir": "/data/imagenet"}, "train", RUN_ID)


@pytest.mark.parametrize("run_id", [
    RUN_ID,
    "scheduled__2026-01-04T00:00:00+00:00",
    "My Run! über 2026",
    "9" * 300,
    "__--__",
    None,
])
def test_job_names_follow_dataflows_rule(run_id):
    from imagenet_airflow.dataflow_launch import dataflow_job_name

    for split in ("train", "validation", "test"):
        name = dataflow_job_name(split, run_id)
        assert JOB_NAME_RULE.fullmatch(name), name
        assert len(name) <= 63
        assert name.startswith(f"imagenet2012-{split}")
        assert dataflow_job_name(split, run_id) == name  # deterministic
    long_a, long_b = dataflow_job_name("train", "a" * 100), dataflow_job_name("train", "a" * 101)
    assert long_a != long_b


def test_the_launcher_waits_unless_only_staging(tmp_path):
    from imagenet_beam import run
    from imagenet_beam.settings import Settings

    settings = Settings.from_mapping({"manual_dir": str(tmp_path), "data_dir": str(tmp_path)})
    with pytest.raises(run.ConvertError, match="needs --stage_only"):
        run.stage(settings, {}, ["--runner=DirectRunner", "--no_wait_until_finish"])


def test_private_setup_file_copies_the_package_directory(tmp_path):
    from imagenet_beam.dataflow import private_setup_file

    package = tmp_path / "pkg"
    (package / "mod").mkdir(parents=True)
    (package / "setup.py").write_text("from setuptools import setup\nsetup()\n")
    (package / "mod" / "__init__.py").write_text("")
    (package / "mod.egg-info").mkdir()
    for argv in ([f"--setup_file={package / 'setup.py'}", "--x=1"],
                 ["--setup_file", str(package / "setup.py"), "--x=1"]):
        with private_setup_file(argv) as private:
            [flag] = [a for a in private if a.startswith("--setup_file")]
            copy = flag.split("=", 1)[1]
            assert copy != str(package / "setup.py") and os.path.isfile(copy)
            copied = os.path.dirname(copy)
            assert os.path.isfile(os.path.join(copied, "mod", "__init__.py"))
            assert not os.path.exists(os.path.join(copied, "mod.egg-info"))
            assert private[-1] == "--x=1" and len(private) == 2
        assert not os.path.exists(copied)  # removed after the launch
    with private_setup_file(["--runner=DirectRunner"]) as same:
        assert same == ["--runner=DirectRunner"]


def test_compose_defines_the_dags_gcp_connection_without_a_key():
    from airflow.models.connection import Connection

    from imagenet_airflow.dataflow_launch import GCP_CONN_ID
    from tests.test_compose import RUNS_TASKS, _interpolate_all, environment, raw_compose, services

    for name in RUNS_TASKS:  # the scheduler launches, the triggerer follows the job
        uri = environment(services()[name])[f"AIRFLOW_CONN_{GCP_CONN_ID.upper()}"]
        conn = Connection(conn_id=GCP_CONN_ID, uri=uri)
        assert conn.conn_type == "google_cloud_platform"
        assert not conn.extra_dejson and not conn.password and not conn.login
    mine = "google-cloud-platform://?project=p"
    given = _interpolate_all(raw_compose(), {"AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": mine})
    env = environment(given["services"][RUNS_TASKS[0]])
    assert env["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"] == mine
