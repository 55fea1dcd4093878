"""
### ImageNet (ILSVRC 2012) → TFDS-compatible shards

Waits for ImageNet in `manual_dir`, verifies it while it merges the October 2019 test
patch, unpacks .tar.gz inputs (the Hugging Face and Kaggle copies) once and converts the
requested splits with Apache Beam (one pipeline on the DirectRunner, a job a split on
Dataflow and Dask), then, once the checks have passed, publishes
`DATA_DIR/imagenet2012/5.1.0/` in one step (readable by `tfds.load("imagenet2012")`) and
records per split its example count and checksums as an Asset event.

`manual_dir` may hold ImageNet as people hold it (the `layout` param; empty: recognised
split by split), each giving the same shards:

- **tarballs**: the archives from https://image-net.org/download-images;
- **imagefolder**: an extracted ImageFolder tree, `train/<wnid>/` (or `train/<wnid>.tar`),
  `val/` or `validation/` (flat or in class folders), `test/`;
- **kaggle**: the Kaggle ImageNet Object Localization Challenge copy (`ILSVRC/`,
  `LOC_synset_mapping.txt`, `LOC_val_solution.csv`);
- **huggingface**: the Hugging Face `imagenet-1k` archives.

`wait_for_archives` and `verify_archives` log which layout each split was found in, and
what is missing in that layout's words. A scheduled run whose inputs, settings and
published output are unchanged skips the conversion and says so.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task

from imagenet_airflow import dataflow_launch, openlineage_events
from imagenet_airflow.asset_naming import SPLITS_ALIAS
from imagenet_airflow.convert_operator import ConvertSplitOperator
from imagenet_airflow.sensors import (
    DEFAULT_WAIT_MINUTES,
    SCHEDULED_WAIT_MINUTES,
    ImageNetArchivesSensor,
)
from imagenet_airflow.tasks import BEAM_MAIN_MODULE
from imagenet_beam import settings

SCHEDULE = os.environ.get("IMAGENET2012_SCHEDULE", "@weekly") or None
POKE_INTERVAL_SECONDS = float(os.environ.get("IMAGENET2012_POKE_INTERVAL_SECONDS", "60"))
SCHEDULED_WAIT_MINUTES = float(
    os.environ.get("IMAGENET2012_SCHEDULED_WAIT_MINUTES", str(SCHEDULED_WAIT_MINUTES))
)
DATAFLOW = "Dataflow (runner = DataflowRunner)"
DASK = "Dask (runner = DaskRunner)"

# Every conversion setting's type, choices and help come from imagenet_beam.settings; the
# deployment chooses only these defaults.
form = settings.form_params(
    defaults={
        "manual_dir": os.environ.get("IMAGENET_MANUAL_DIR", "/data/imagenet/manual"),
        "data_dir": os.environ.get("IMAGENET_DATA_DIR", "/data/imagenet/tfds"),
        "test_patch": "ILSVRC2012_img_test_patch_v10102019.tar",
    }
)
# What the layout dropdown shows for each value (the form would show the empty choice as
# "null"); the run's conf gets the value.
form["layout"]["values_display"] = {
    "null": "any: recognised from what is there, split by split",
    "tarballs": "tarballs: the archives from image-net.org",
    "imagefolder": "imagefolder: extracted train/, val/ (or validation/), test/",
    "kaggle": "kaggle: the Kaggle ImageNet Object Localization Challenge copy",
    "huggingface": "huggingface: the Hugging Face imagenet-1k archives",
}
form["dataset"]["values_display"] = {
    "imagenet2012": "imagenet2012: the whole dataset (TFDS 5.1.0)",
    "imagenet2012_subset/1pct": "imagenet2012_subset/1pct: train as in SimCLR's "
    "1percent.txt (in manual_dir)",
    "imagenet2012_subset/10pct": "imagenet2012_subset/10pct: train as in SimCLR's "
    "10percent.txt (in manual_dir)",
    "imagenet2012_real": "imagenet2012_real: validation with ReaL's real.json (in manual_dir)",
}
form["schema"]["values_display"] = {
    "tfds": "tfds: TFDS's features (tfds.load)",
    "classic": "classic: the TF/TPU ResNet, Model Garden and MLPerf format, with boxes",
}
params = {name: Param(**spec) for name, spec in form.items()}
params.update({
    "runner": Param(
        dataflow_launch.DIRECT_RUNNER,
        type="string",
        enum=list(dataflow_launch.RUNNERS),
        title="Beam runner",
        description="DirectRunner: on this Airflow worker. DataflowRunner: on Google Cloud "
        "Dataflow (manual_dir and data_dir must be gs://; see the Dataflow section). "
        "DaskRunner: on the Dask cluster at the scheduler address of the Dask section, or "
        "without one on a local cluster on this Airflow worker.",
        section=settings.EXECUTION,
    ),
    "num_workers": Param(
        os.cpu_count() or 1,
        type="integer",
        minimum=1,
        title="Workers",
        description="DirectRunner: worker threads. DataflowRunner: maximum workers. "
        "DaskRunner without a scheduler address: local worker processes.",
        section=settings.EXECUTION,
    ),
    "wait_timeout_minutes": Param(
        DEFAULT_WAIT_MINUTES,
        type="number",
        exclusiveMinimum=0,
        title="Wait for archives (minutes)",
        description="How long a triggered run's wait_for_archives waits for missing inputs "
        "before failing (a scheduled run waits at most "
        f"{SCHEDULED_WAIT_MINUTES:g} minutes).",
        section=settings.EXECUTION,
    ),
    "dask_scheduler_address": Param(
        None,
        type=["null", "string"],
        title="Dask scheduler address",
        description="The scheduler of a running Dask cluster, e.g. tcp://scheduler:8786 "
        "(`dask scheduler`, dask-jobqueue, dask-kubernetes). Its workers must have "
        "imagenet-beam[dask] installed and reach manual_dir and data_dir at the same paths "
        "(a shared file system, or gs://). Empty: a local cluster of `Workers` processes.",
        section=DASK,
    ),
    "dataflow_project": Param(
        None, type=["null", "string"], title="GCP project",
        description="The Google Cloud project the Dataflow jobs run in.", section=DATAFLOW,
    ),
    "dataflow_region": Param(
        None, type=["null", "string"], title="Region",
        description="The Dataflow region, e.g. us-central1.", section=DATAFLOW,
    ),
    "dataflow_temp_location": Param(
        None,
        type=["null", "string"],
        pattern="^gs://",
        title="Temp location",
        description="gs:// prefix for Dataflow's temporary files (and staged files, unless "
        "a staging location is given).",
        section=DATAFLOW,
    ),
    "dataflow_staging_location": Param(
        None,
        type=["null", "string"],
        pattern="^gs://",
        title="Staging location",
        description="gs:// prefix where the launcher stages the pipeline and the imagenet_beam "
        "package for the workers. Empty: TEMP_LOCATION/staging.",
        section=DATAFLOW,
    ),
    "dataflow_service_account": Param(
        None,
        type=["null", "string"],
        title="Service account email",
        description="The workers' identity (needs roles/dataflow.worker and access to the "
        "buckets). Empty: the project's Compute Engine default service account.",
        section=DATAFLOW,
    ),
    "dataflow_machine_type": Param(
        "n2-standard-4",
        type=["null", "string"],
        title="Worker machine type",
        description="Compute Engine machine type of each worker. Empty: Dataflow's default.",
        section=DATAFLOW,
    ),
})


@dag(
    dag_id="imagenet2012",
    doc_md=__doc__,
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params=params,
    render_template_as_native_obj=True,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["imagenet", "tfds", "beam"],
)
def imagenet2012():
    wait_for_archives = ImageNetArchivesSensor(
        task_id="wait_for_archives",
        manual_dir="{{ params.manual_dir }}",
        splits="{{ params.splits }}",
        test_patch="{{ params.test_patch }}",
        wait_timeout_minutes="{{ params.wait_timeout_minutes }}",
        scheduled_wait_minutes=SCHEDULED_WAIT_MINUTES,
        poke_interval=POKE_INTERVAL_SECONDS,
        timeout=timedelta(days=30),
        retries=0,
    )

    @task(retries=0)
    def take_lease(params=None, dag_run=None) -> str:
        """One writer per version: held from here to the end of publish."""
        from imagenet_airflow import tasks

        return tasks.take_lease(params, dag_run.run_id)

    @task
    def release_lease(params=None, dag_run=None) -> None:
        """The run's end, however it went: its unpublished staging removed, its lease
        released."""
        from imagenet_airflow import tasks

        tasks.release_lease(params, dag_run.run_id)

    @openlineage_events.lineage_task(openlineage=openlineage_events.archives_read)
    def verify_archives(params=None, dag_run=None) -> dict:
        from imagenet_airflow import tasks

        return tasks.verify_archives(params, dag_run.run_id)

    @task
    def plan_conversion(params=None, dag_run=None, ti=None) -> list[dict]:
        """The test tar merged with its patch, .tar.gz inputs unpacked, then the convert
        task's arguments per job (XCom `plan`: what publish checks); when up to date, one
        instance that logs why nothing is converted and is skipped."""
        from imagenet_airflow import tasks

        plan = tasks.plan_conversion(params, dag_run.run_id)
        ti.xcom_push(key="plan", value={k: v for k, v in plan.items() if k != "jobs"})
        return tasks.convert_kwargs(params, plan)

    @task(trigger_rule="none_failed")
    def publish(verified: dict, plan: dict, params=None, dag_run=None):
        from imagenet_airflow import tasks

        run = {"dag_id": dag_run.dag_id, "run_id": dag_run.run_id}
        return tasks.publish(params, verified, plan, run)

    @openlineage_events.lineage_task(
        openlineage=openlineage_events.archives_to_splits, trigger_rule="none_failed",
        outlets=[SPLITS_ALIAS],
    )
    def validate_and_record(
        published: dict, verified: dict, params=None, outlet_events=None, ti=None
    ) -> dict:
        # `verified` is for the OpenLineage event only: the run's archives are its inputs.
        from imagenet_airflow import asset_naming, tasks

        validated = tasks.verify_published(params, published)
        output = tasks.output(params)
        for split, info in validated["splits"].items():
            outlet_events[SPLITS_ALIAS].add(
                asset_naming.split_asset(validated["version_dir"], split, output),
                extra={
                    **asset_naming.split_extra(
                        validated["version_dir"], validated["file_format"], info,
                        validated["reprocessed"],
                    ),
                    # Airflow lists a task as an Asset's producer only for a static outlet;
                    # the events through the alias name it here.
                    "produced_by": f"{ti.dag_id}.{ti.task_id}",
                },
            )
        return tasks.short_summary(validated, params["splits"])

    # The archives' checks run beside the merge, the unpacking and the conversion (a first
    # run's long reads); publish waits for all of them. A re-run knows its checks (cached)
    # when it plans, and skips the conversion when nothing changed.
    checked = verify_archives()
    jobs = plan_conversion()
    # Per job (every split in one on the DirectRunner, a split a job elsewhere): runner,
    # pipeline options, and for Dataflow deferrable=True with the job's
    # DataflowConfiguration (dataflow_launch.convert_operator_kwargs).
    convert = ConvertSplitOperator.partial(
        task_id="convert",
        py_file=BEAM_MAIN_MODULE,
        py_options=["-m"],
        py_interpreter=sys.executable,
        map_index_template="{{ task.label }}",
        retries=2,
    ).expand_kwargs(jobs)
    published = publish(checked, jobs["plan"])
    lease = take_lease()
    wait_for_archives >> lease >> [checked, jobs]
    convert >> published
    published >> release_lease().as_teardown(setups=lease)
    validate_and_record(published, checked)


imagenet2012()
