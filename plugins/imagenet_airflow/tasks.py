"""What each task of the `imagenet2012` DAG does: a thin call of one `imagenet_beam.run` step.

Only what is Airflow's lives here: the run's params become `Settings`, bad input becomes
`AirflowFailException` (a retry would read the same bytes), and the task log says what
happened. The data work, and every decision about it, is `imagenet_beam.run`'s.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from imagenet_airflow import dataflow_launch

log = logging.getLogger(__name__)

BEAM_MAIN_MODULE = "imagenet_beam.beam_main"


def settings(params: Mapping):
    """The conversion settings of a run's params (the DAG's execution params are not)."""
    from imagenet_beam import run

    try:
        return run.settings_from(params)
    except run.ConvertError as e:
        raise AirflowFailException(str(e)) from None


@contextlib.contextmanager
def holding_lease(conversion, run_id: str) -> Iterator[None]:
    """The run's lease on the version, renewed while the task runs (taken by `take_lease`,
    released by `release_lease`); another run holding it fails the task at once."""
    from imagenet_beam import run

    try:
        with run.holding_lease(run.output_layout(conversion), run_id, process_bound=False):
            yield
    except run.ConvertError as e:
        raise AirflowFailException(str(e)) from None


def take_lease(params: Mapping, run_id: str) -> str:
    """One writer per version: the run takes the version's lease before it reads or
    writes anything, and holds it until `release_lease`."""
    from imagenet_beam import run

    conversion = settings(params)
    with holding_lease(conversion, run_id):
        path = run.output_layout(conversion).lease_file
        log.info("this run holds %s until it has published (or failed)", path)
    return path


def release_lease(params: Mapping, run_id: str) -> None:
    from imagenet_beam import run

    log.info(run.release_lease(settings(params), run_id))


def find_inputs(conversion):
    """Each split's input (`run.Inputs`), or the task fails: a wrong path at once, a missing
    input by its retry (it may appear)."""
    from imagenet_beam import run

    try:
        run.check_paths(conversion)
        inputs, missing = run.look_for_inputs(conversion)
    except run.ConvertError as e:  # a path outside, one split in two layouts
        raise AirflowFailException(str(e)) from None
    if missing:
        raise FileNotFoundError(missing)  # may appear by the retry
    log.info("found %s", run.found_text(inputs))
    return inputs


def verify_archives(params: Mapping, run_id: str) -> dict:
    """Size, sha256 (against the published values when asked) and readability of every
    archive the run needs; an extracted folder counted and every file hashed; cached by
    path, size and modification time. Logs which input layout each split was found in.

    Runs beside the conversion (the long reads of a first run); `publish` waits for it,
    and publishes nothing when a check fails."""
    from imagenet_beam import run

    conversion = settings(params)
    inputs = find_inputs(conversion)
    with holding_lease(conversion, run_id):
        try:
            checks = run.check_archives(conversion, inputs)
        except run.ConvertError as e:
            raise AirflowFailException(str(e)) from None
    for check in checks:
        counted = getattr(check, "layout", "")  # an extracted folder: no published checksum
        log.info(
            "%s: %s%s bytes, sha256 %s%s%s%s",
            check.name,
            f"{check.num_members:,} images, " if counted else "",
            f"{check.size:,}",
            check.sha256 + (" (of its manifest)" if counted else ""),
            (" (the counts of full ILSVRC 2012)" if counted else
             " (matches the published checksum)") if check.verified_against else "",
            " (cached result)" if check.cached else "",
            f"; {len(check.ignored)} stray file(s) left out, e.g. {check.ignored[0]}"
            if counted and check.ignored else "",
        )
    return {"inputs": inputs.to_dict(), "archives": [check.to_dict() for check in checks]}


def _merge_test_patch(conversion, inputs) -> dict | None:
    """Merges the 2012 test tar with the patch when the test split needs it."""
    from imagenet_beam import run

    try:
        report = run.merge_test_patch(conversion, inputs)
    except run.ConvertError as e:
        raise AirflowFailException(str(e)) from None
    if report is None:
        log.info("nothing to merge: the test split is not requested or its tar is patched")
    elif report["reused"]:
        log.info("merged test tar %s is up to date with its inputs; nothing to do",
                 report["output"])
    else:
        replaced = report["replaced"]
        log.info(
            "merged %s: %d member(s) replaced by the patch (%s), %d added",
            report["output"],
            len(replaced),
            ", ".join(replaced[:20]) + (" …" if len(replaced) > 20 else ""),
            len(report["added"]),
        )
    return report


def _unpack_archives(conversion, inputs) -> list[dict]:
    """Unpacks each .tar.gz input once (Hugging Face's archives, the Kaggle copy's) and
    checks what it holds; a row per packed split (what the fingerprint and lineage cover
    beside verify_archives' rows)."""
    from imagenet_beam import run

    try:
        rows = run.unpack_archives(conversion, inputs)
    except run.ConvertError as e:
        raise AirflowFailException(str(e)) from None
    if not rows:
        log.info("nothing to unpack: no split is read from a .tar.gz")
    for row in rows:
        log.info(
            "%s: %s images (%s bytes) from %s%s; %d stray file(s) left out%s",
            row.name, f"{row.num_members:,}", f"{row.size:,}", row.path,
            " (unpacked before)" if row.cached else "", len(row.ignored),
            f"; {len(row.labels_from_layout)} validation label(s) taken from the layout"
            if row.labels_from_layout else "",
        )
    return [r.to_dict() for r in rows]


def conversion_jobs(
    params: Mapping, paths: Mapping[str, Any], staging_dir: str, run_id: str | None = None
) -> list[dict]:
    """The Beam pipeline options of each conversion job (one for every split on the
    DirectRunner, one a split elsewhere: `dataflow_launch.one_job`): the settings as the
    launcher takes them (`Settings.to_flags`), plus the runner's own options.

    paths: split → what it is read from (`run.conversion_inputs`); the test split's is
    passed on, as it may be the merged test tar.
    """
    from imagenet_beam import run

    conversion = settings(params)
    groups = (
        [list(conversion.splits)] if dataflow_launch.one_job(params)
        else [[split] for split in conversion.splits]
    )
    test = paths.get("test")
    jobs = []
    for splits in groups:
        job = conversion.replace(
            splits=splits, stage_only=True, staging_dir=staging_dir, run_id=run_id,
            # the test split's tar is named (it may be the merged one); folders are found
            test_archive=(
                test.archive if "test" in splits and test and test.layout == "tarballs"
                else None
            ),
        )
        options: dict = dict(flag[2:].split("=", 1) for flag in job.to_flags())
        size = (run.archives_bytes(run.archive_sizes({s: paths[s] for s in splits}))
                if all(s in paths for s in splits) else None)
        options.update(
            dataflow_launch.execution_options(params, ",".join(splits), run_id, size)
        )
        jobs.append(options)
    return jobs


def plan_conversion(params: Mapping, run_id: str) -> dict:
    """What comes before the conversion, in one task: the test tar merged with its patch
    and each .tar.gz input unpacked (both once, reused after), then the plan: skip when
    nothing changed, or clear staging and give the conversion's jobs.

    Whether anything changed is known here when the archives' checks are (a re-run finds
    them cached); otherwise the conversion starts beside verify_archives, and `publish`
    compares the checks' fingerprint with what is published.

    Returns the plan: `jobs` (the Beam pipeline options of each job), `up_to_date` and its
    `reason`, the `fingerprint` when known, the patch report (`merged`) and the unpacked
    inputs' rows (`archives`)."""
    from imagenet_beam import run

    conversion = settings(params)
    inputs = find_inputs(conversion)
    with holding_lease(conversion, run_id):
        merged = _merge_test_patch(conversion, inputs)
        unpacked = _unpack_archives(conversion, inputs)
        try:
            known = run.check_archives(conversion, inputs, cached_only=True)
        except run.ConvertError as e:
            raise AirflowFailException(str(e)) from None
        plan = {"up_to_date": False, "reason": None, "fingerprint": None, "merged": merged,
                "archives": unpacked, "jobs": []}
        if known is not None:
            plan["fingerprint"] = run.fingerprint(conversion, [*known, *unpacked])
            reason = None if conversion.force else run.up_to_date(conversion, plan["fingerprint"])
            if reason:
                log.info("skipping the conversion: %s", reason)
                return {**plan, "up_to_date": True, "reason": reason}
        else:
            log.info("the archives are checked beside the conversion (verify_archives); "
                     "publish waits for their checks")
        try:
            run.check_space(conversion, inputs)
        except run.ConvertError as e:
            raise AirflowFailException(str(e)) from None
        staging = run.prepare_staging(conversion)
    paths = run.conversion_inputs(inputs, merged)
    return {**plan, "jobs": conversion_jobs(params, paths, staging, run_id)}


def convert_kwargs(params: Mapping, plan: Mapping) -> list[dict]:
    """The convert task's arguments per job; when up to date, one instance that logs why
    nothing is converted and is skipped."""
    if plan["up_to_date"]:
        return [{"up_to_date": plan["reason"]}]
    return dataflow_launch.convert_operator_kwargs(params, plan["jobs"])


def publish(params: Mapping, verified: Mapping, plan: Mapping, run_info: Mapping) -> dict:
    """TFDS metadata and lineage.json, then the version directory appears in one step;
    only once the archives' checks passed (verify_archives) and say what the plan assumed."""
    from imagenet_beam import run

    if plan["up_to_date"]:
        log.info("nothing to publish: %s", plan["reason"])
        return {"published": False, "reason": plan["reason"]}
    conversion = settings(params)
    archives = [*verified["archives"], *plan["archives"]]
    wanted = run.fingerprint(conversion, archives)
    if plan["fingerprint"] not in (None, wanted):
        raise AirflowFailException(
            "the archives changed while this run converted them (their checks no longer "
            "match the ones the conversion was planned from): nothing published; run again "
            "once they are complete"
        )
    with holding_lease(conversion, run_info["run_id"]):
        reason = None
        if plan["fingerprint"] is None and not conversion.force:
            reason = run.up_to_date(conversion, wanted)
        if reason:
            # Checked beside the conversion, the archives turned out to be the ones
            # published: what this run staged is dropped by release_lease.
            log.info("nothing to publish: %s", reason)
            return {"published": False, "reason": reason}
        try:
            record = run.publish(
                conversion.data_dir,
                output=run.output_of(conversion),
                overwrite=True,
                splits=conversion.splits,
                run_id=run_info["run_id"],
                fingerprint=wanted,
                archives=archives,
                test_patch=plan["merged"],
                airflow={**run_info, "params": dict(params)},
                read_back=True,
                keep_replaced=True,  # removed by release_lease, beside validate_and_record
            )
        except run.ConvertError as e:  # what is staged is wrong: a retry would see it again
            raise AirflowFailException(str(e)) from None
    version_dir = run.output_layout(conversion).version_dir
    return {
        "published": True,
        "read_back": True,  # every shard read and hashed before it was made visible
        "version_dir": version_dir,
        "splits": {s: info.num_examples for s, info in record.splits.items()},
    }


def output(params: Mapping):
    """What the run publishes (`layout.Output`): imagenet2012 or another dataset/schema."""
    from imagenet_beam import run

    return run.output_of(settings(params))


def verify_published(params: Mapping, published: Mapping) -> dict:
    """Reads the published version back (every shard's sha256 when this run wrote it and
    publish did not read it back already); returns what to record per split."""
    from imagenet_beam import metadata, run

    conversion = settings(params)
    # A version this run did not publish was read back by the run that did; what has not
    # changed since (marker, files, shard sizes) the plan checked. A new version's shards
    # publish read back and hashed before making them visible (beside its report); here
    # its marker, files and sizes, the metadata loaded by TFDS's builder and a first image
    # a split decoded, without TensorFlow, whose import (~4 s) would be most of it.
    fresh = bool(published["published"])
    hashed = fresh and not published.get("read_back", False)
    try:
        summary = run.verify(conversion, decode=fresh, checksums=hashed, tensorflow=False)
    except run.ConvertError as e:
        raise AirflowFailException(str(e)) from None
    version_dir = run.output_layout(conversion).version_dir
    lineage = metadata.read_lineage(version_dir).to_dict()
    return {
        "version_dir": version_dir,
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
