"""What each task of the `imagenet2012` DAG does, as plain functions of the run's params.

The DAG file only wires these together; the data work is done by `imagenet_beam`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence

from airflow.sdk.exceptions import AirflowFailException

log = logging.getLogger(__name__)

WORK_DIR_NAME = ".imagenet2012-work"  # beside imagenet2012/ in data_dir: caches, merged tar
BEAM_MAIN_MODULE = "imagenet_beam.beam_main"
# The Airflow connection the convert task (launcher and trigger) reaches Dataflow with.
# Chosen by whoever deploys the DAG, not by whoever triggers a run: its credentials decide
# what the job may do. Empty connection extras mean Application Default Credentials.
GCP_CONN_ID = os.environ.get("IMAGENET2012_GCP_CONN_ID", "google_cloud_default")
DATAFLOW_RUNNER = "DataflowRunner"
DATAFLOW_JOB_NAME_MAX = 63  # what Beam keeps its own generated names to


def work_dir(data_dir: str) -> str:
    from imagenet_beam import storage

    return storage.join(data_dir, WORK_DIR_NAME)


def _splits(params: Mapping) -> list[str]:
    from imagenet_beam import convert

    return convert.parse_splits(list(params["splits"]))


def _test_patch(params: Mapping) -> str | None:
    return params.get("test_patch") or None


def verify_archives(params: Mapping) -> dict:
    """Size, sha256 (against the published values when asked) and readability of every
    archive the run needs; cached by path, size and modification time."""
    from imagenet_beam import archive_checks, inputs, storage

    found, missing = inputs.find_sources(params["manual_dir"], _splits(params), _test_patch(params))
    if missing:
        raise FileNotFoundError(inputs.missing_message(params["manual_dir"], missing))
    paths = sorted({p for source in found.values() for p in source.paths})
    try:
        checks = archive_checks.check_archives(
            paths,
            verify_checksum=bool(params["verify_checksums"]),
            cache_dir=storage.join(work_dir(params["data_dir"]), "archive-checks"),
        )
    except archive_checks.ArchiveCheckError as e:
        raise AirflowFailException(str(e)) from None  # a retry would read the same bytes
    for check in checks:
        log.info(
            "%s: %s bytes, sha256 %s%s%s",
            check.name,
            f"{check.size:,}",
            check.sha256,
            " (matches the published checksum)" if check.verified_against else "",
            " (cached result)" if check.cached else "",
        )
    return {
        "sources": {
            split: {"archive": source.archive, "patch": source.patch}
            for split, source in found.items()
        },
        "archives": [check.to_dict() for check in checks],
    }


def merge_test_patch(params: Mapping, verified: Mapping) -> dict | None:
    """Merges the 2012 test tar with the patch when the test split needs it."""
    from imagenet_beam import patch_merge

    source = verified["sources"].get("test")
    if not source or not source["patch"]:
        log.info("nothing to merge: the test split is not requested or its tar is patched")
        return None
    try:
        report = patch_merge.merge_test_patch(
            source["archive"],
            source["patch"],
            patch_merge.default_output(work_dir(params["data_dir"])),
        )
    except patch_merge.UnsafeMemberError as e:
        raise AirflowFailException(str(e)) from None
    if report.reused:
        log.info("merged test tar %s is up to date with its inputs; nothing to do", report.output)
    else:
        log.info(
            "merged %s: %d member(s) replaced by the patch (%s), %d added",
            report.output,
            len(report.replaced),
            ", ".join(report.replaced[:20]) + (" …" if len(report.replaced) > 20 else ""),
            len(report.added),
        )
    return report.to_dict()


SETTINGS_THAT_CHANGE_OUTPUT = (
    "splits",
    "file_format",
    "num_shards",
    "on_corrupt",
    "validate_images",
    "resize",
    "test_patch",
)


def fingerprint(params: Mapping, verified: Mapping) -> str:
    """Identifies a conversion: the archives' content and the settings that shape output."""
    from imagenet_beam import metadata

    archives = sorted(
        (a["name"], a["size"], a["sha256"]) for a in verified["archives"]
    )
    settings = {key: params.get(key) for key in SETTINGS_THAT_CHANGE_OUTPUT}
    settings["splits"] = sorted(settings["splits"])
    producer = metadata.producer()
    text = json.dumps(
        {"archives": archives, "settings": settings, "producer": producer["version"]},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _published_and_intact(data_dir: str, wanted: str) -> str | None:
    """Why the published version can be kept, or None when it must be converted again."""
    from imagenet_beam import convert, metadata, storage, verify

    final, _ = convert.output_dirs(data_dir)
    if not metadata.is_published(final):
        if storage.list_files(final):
            log.info("%s has no completion marker (an unfinished publication): converting", final)
        return None
    lineage = metadata.read_lineage(final)
    if lineage.get("fingerprint") != wanted:
        log.info("published %s was made from other inputs or settings: converting", final)
        return None
    try:
        verify.verify_output(final, decode=False, checksums=False)
    except verify.VerificationError as e:
        log.warning("published %s no longer matches its lineage (%s): converting", final, e)
        return None
    return f"{final} was made from the same archives and settings and still verifies"


def conversion_jobs(
    params: Mapping, merged: Mapping | None, staging_dir: str, run_id: str | None = None
) -> list[dict]:
    """The Beam pipeline options of one conversion per split.

    run_id names the Dataflow jobs (see `dataflow_job_name`)."""
    jobs = []
    for split in _splits(params):
        options = {
            "manual_dir": params["manual_dir"],
            "data_dir": params["data_dir"],
            "splits": split,
            "file_format": params["file_format"],
            "num_shards": params.get("num_shards"),
            "on_corrupt": params["on_corrupt"],
            "validate": bool(params.get("validate_images")),
            "resize": params.get("resize") or None,
            "stage_only": True,
            "staging_dir": staging_dir,
        }
        if split == "test" and merged:
            options["test_archive"] = merged["output"]
        if params["runner"] == "DirectRunner":
            workers = int(params["num_workers"])
            # Threads: the heavy work runs in C with the GIL released (see imagenet_beam).
            options["direct_running_mode"] = "multi_threading" if workers > 1 else "in_memory"
            options["direct_num_workers"] = workers
        else:
            options.update(dataflow_options(params, split, run_id))
        jobs.append(options)
    return jobs


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
    """Per split, the BeamRunPythonPipelineOperator arguments of the mapped convert task.

    DataflowRunner: the task launches the job, then defers to the triggerer until the job
    is done (DataflowJobStateCompleteTrigger), so no worker slot is held while it runs. The
    DirectRunner does its work in the launcher process itself, so it must not defer (the
    operator would run the whole pipeline inside the triggerer).
    """
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


def plan_conversion(
    params: Mapping, verified: Mapping, merged: Mapping | None, run_id: str | None = None
) -> dict:
    """Skip when nothing changed; otherwise clear staging and give one job per split."""
    from imagenet_beam import convert, storage

    wanted = fingerprint(params, verified)
    final, staging = convert.output_dirs(params["data_dir"])
    reason = _published_and_intact(params["data_dir"], wanted)
    if reason:
        log.info("skipping the conversion: %s", reason)
        return {"up_to_date": True, "reason": reason, "fingerprint": wanted, "jobs": []}
    storage.delete_tree(staging)  # whatever a killed run left behind
    jobs = conversion_jobs(params, merged, staging, run_id)
    return {"up_to_date": False, "reason": None, "fingerprint": wanted, "jobs": jobs}


def publish(
    params: Mapping,
    verified: Mapping,
    merged: Mapping | None,
    plan: Mapping,
    run: Mapping,
) -> dict:
    """TFDS metadata and lineage.json, then the version directory appears in one step."""
    from imagenet_beam import convert

    if plan["up_to_date"]:
        log.info("nothing to publish: %s", plan["reason"])
        return {"published": False, "reason": plan["reason"]}
    record = convert.publish(
        params["data_dir"],
        extra={
            "fingerprint": plan["fingerprint"],
            "archives": verified["archives"],
            "test_patch": merged,
            "airflow": {**run, "params": dict(params)},
        },
    )
    final, _ = convert.output_dirs(params["data_dir"])
    log.info("published %s", final)
    return {
        "published": True,
        "version_dir": final,
        "splits": {s: info["num_examples"] for s, info in record["splits"].items()},
    }


def validate(params: Mapping, published: Mapping) -> dict:
    """Reads the published version back; returns what to record per split."""
    from imagenet_beam import convert, metadata, verify

    final, _ = convert.output_dirs(params["data_dir"])
    summary = verify.verify_output(final, decode=True, checksums=bool(published["published"]))
    lineage = metadata.read_lineage(final)
    return {
        "version_dir": final,
        "file_format": lineage["options"]["file_format"],
        "reprocessed": bool(published["published"]),
        "splits": {split: lineage["splits"][split] for split in summary["splits"]},
        "summary": summary,
    }


def short_summary(validated: Mapping, wanted_splits: Sequence[str]) -> dict:
    return {
        "version_dir": validated["version_dir"],
        "reprocessed": validated["reprocessed"],
        "splits": {
            split: {
                "num_examples": info["num_examples"],
                "num_shards": info["num_shards"],
                "num_bytes": info["num_bytes"],
            }
            for split, info in validated["splits"].items()
            if split in wanted_splits
        },
    }
