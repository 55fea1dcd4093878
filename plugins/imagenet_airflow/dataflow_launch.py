"""How the DAG's convert task launches a split's Beam job on its runner, and how it waits.

DataflowRunner: the task submits the job, then defers to the triggerer until the job is
done (DataflowJobStateCompleteTrigger), so no worker slot is held while it runs. The
DirectRunner does its work in the launcher process itself, so it must not defer (the
operator would run the whole pipeline inside the triggerer); nor the DaskRunner, whose
job ends with the launcher that submitted it (on a running cluster at
`dask_scheduler_address`, or on a local one the launcher starts).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence

from imagenet_beam import runners

# The Airflow connection the convert task (launcher and trigger) reaches Dataflow with.
# Chosen by whoever deploys the DAG, not by whoever triggers a run: its credentials decide
# what the job may do. Empty connection extras mean Application Default Credentials.
GCP_CONN_ID = os.environ.get("IMAGENET2012_GCP_CONN_ID", "google_cloud_default")
DATAFLOW_RUNNER = runners.DATAFLOW.name
DIRECT_RUNNER = runners.DIRECT.name
DASK_RUNNER = runners.DASK.name
RUNNERS = runners.NAMES
DATAFLOW_JOB_NAME_MAX = 63  # what Beam keeps its own generated names to


def beam_setup_file() -> str:
    """The beam/ package's setup.py, which Dataflow workers install the package from."""
    import imagenet_beam

    default = os.path.join(os.path.dirname(os.path.dirname(imagenet_beam.__file__)), "setup.py")
    return os.environ.get("IMAGENET_BEAM_SETUP_FILE", default)


def dataflow_job_name(split: str, run_id: str | None) -> str:
    """`imagenet2012-<split>-<run id>` in Dataflow's job-name alphabet.

    Dataflow wants `[a-z]([-a-z0-9]*[a-z0-9])?`, unique among the project's active jobs in
    the region. The same run and split give the same name, so a retry whose previous job is
    still running is refused by Dataflow instead of writing the same shards twice; another
    run gets another name. Too long a name is cut and ends in a hash of the whole of it.
    """
    text = f"imagenet2012-{split}-{run_id or 'manual'}".lower()
    name = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    if len(name) > DATAFLOW_JOB_NAME_MAX:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        name = name[: DATAFLOW_JOB_NAME_MAX - len(digest) - 1].rstrip("-") + "-" + digest
    return name


def one_job(params: Mapping) -> bool:
    """Whether the run's splits are converted by one Beam job rather than one job a split.

    The DirectRunner converts in the convert task's own process: one pipeline for every
    split starts its worker processes once and keeps them all busy (the command line's
    way); a job a split would start as many launchers and worker pools, each for part of
    the work. Dataflow and Dask get a job a split: they run side by side on the cluster,
    and a failed split is retried alone."""
    return params["runner"] == DIRECT_RUNNER


def execution_options(
    params: Mapping, split: str, run_id: str | None = None, input_bytes: int | None = None
) -> dict:
    """The runner's own pipeline options for one job (`split`: the split it converts, or
    the splits, comma-separated, of the DirectRunner's one job; input_bytes: the size of
    its archives, when known)."""
    if params["runner"] == DATAFLOW_RUNNER:
        return dataflow_options(params, split, run_id)
    workers = int(params["num_workers"])
    if params["runner"] == DASK_RUNNER:
        address = params.get("dask_scheduler_address")
        return {"dask_client_address": address} if address else {"dask_local_workers": workers}
    # Worker processes, one a worker, as the command line runs (see
    # imagenet_beam.run._with_runner_defaults): the per-image Python holds a process's GIL.
    # Threads for a small input, whose conversion the processes' start would outlast.
    from imagenet_beam import run

    return {"direct_running_mode": run.direct_running_mode(workers, input_bytes),
            "direct_num_workers": workers}


def dataflow_options(params: Mapping, split: str, run_id: str | None = None) -> dict:
    """The DataflowRunner's pipeline options for one split's job. No credentials: the
    launcher uses the Airflow connection's (or Application Default) credentials."""
    temp_location = params.get("dataflow_temp_location")
    staging_location = params.get("dataflow_staging_location") or (
        temp_location.rstrip("/") + "/staging" if temp_location else None
    )
    options = {
        "project": params.get("dataflow_project"),
        "region": params.get("dataflow_region"),
        "temp_location": temp_location,
        "staging_location": staging_location,
        "service_account_email": params.get("dataflow_service_account") or None,
        "worker_machine_type": params.get("dataflow_machine_type") or None,
        "max_num_workers": int(params["num_workers"]),
        "setup_file": beam_setup_file(),
        "job_name": dataflow_job_name(split, run_id),
        # Submit and exit: the convert task waits for the job (deferred, see
        # convert_operator_kwargs), and publish checks that every shard was written.
        "no_wait_until_finish": True,
    }
    missing = [k for k in ("project", "region", "temp_location") if not options[k]]
    if missing:
        raise ValueError(
            f"runner=DataflowRunner needs dataflow_{', dataflow_'.join(missing)} in the params"
        )
    local = [k for k in ("manual_dir", "data_dir") if not str(params[k]).startswith("gs://")]
    if local:
        raise ValueError(
            f"runner=DataflowRunner reads and writes on Dataflow's workers: {' and '.join(local)} "
            "must be gs:// paths"
        )
    return options


def convert_operator_kwargs(params: Mapping, jobs: Sequence[Mapping]) -> list[dict]:
    """Per job (`one_job`), the BeamRunPythonPipelineOperator arguments of the mapped
    convert task."""
    kwargs = []
    for job in jobs:
        if params["runner"] == DATAFLOW_RUNNER:
            kwargs.append({
                "runner": DATAFLOW_RUNNER,
                "pipeline_options": dict(job),
                "deferrable": True,
                "gcp_conn_id": GCP_CONN_ID,
                "dataflow_config": {
                    "job_name": job["job_name"],
                    "append_job_name": False,
                    "project_id": job["project"],
                    "location": job["region"],
                    "gcp_conn_id": GCP_CONN_ID,
                    "wait_until_finished": True,
                },
            })
        else:
            kwargs.append({
                "runner": params["runner"],
                "pipeline_options": dict(job),
                "deferrable": False,
            })
    return kwargs
