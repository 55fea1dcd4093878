"""Waiting for archives and refusing bad ones, in real DAG runs (`dag.test()`, SQLite)."""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from datetime import UTC, datetime

from imagenet_beam import dataset, synthetic
from tests.conftest import version_dir
from tests.dags.conftest import task_instance

ONLY_THE_SENSOR = r"^(?!wait_for_archives$).*"  # every other task is marked success


def _wait(dag, manual_dir: str, splits: list[str], wait_minutes: float):
    """A run of the real DAG in which only wait_for_archives does its work.

    Returns (final state of wait_for_archives, when it ended).
    """
    run = dag.test(
        run_conf={
            "manual_dir": manual_dir,
            "data_dir": manual_dir + "-out",
            "splits": splits,
            "test_patch": synthetic.PATCH_ARCHIVE,
            "wait_timeout_minutes": wait_minutes,
        },
        mark_success_pattern=ONLY_THE_SENSOR,
    )
    ti = task_instance(dag.dag_id, run.run_id, "wait_for_archives")
    return str(ti.state), ti.end_date


def test_archives_that_appear_while_waiting_end_the_wait(imagenet_dag, tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()

    downloaded_at = []

    def download_later():
        threading.Event().wait(4)
        synthetic.generate_manual_dir(
            str(manual), splits=("validation", "test"), test_archives=("2012", "patch")
        )
        downloaded_at.append(datetime.now(UTC))

    downloader = threading.Thread(target=download_later)
    downloader.start()
    state, ended = _wait(imagenet_dag, str(manual), ["validation", "test"], wait_minutes=5)
    downloader.join()
    assert state == "success"
    assert ended >= downloaded_at[0]  # it waited for the files instead of failing at once


def _exception_text(log: str, name: str) -> str:
    """The message of the last `name` exception in a task's log: from the last line of its
    traceback up to the next log record."""
    start = log.rindex(f"{name}: ") + len(name) + 2
    next_record = re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d", log[start:], re.MULTILINE)
    return log[start : start + next_record.start()] if next_record else log[start:]


def test_archives_that_never_appear_fail_with_what_is_missing(imagenet_dag, tmp_path, capfd):
    manual = tmp_path / "manual"
    synthetic.generate_manual_dir(str(manual), splits=("validation",))
    # Long enough for a few "still waiting" looks (which list the same) before it gives up.
    state, _ = _wait(imagenet_dag, str(manual), ["train", "validation", "test"], wait_minutes=0.15)
    assert state == "failed"
    out = capfd.readouterr()
    log = out.out + out.err

    # The timeout the task failed with lists every missing archive and how to get them.
    timeout = _exception_text(log, "AirflowSensorTimeout")
    assert timeout.startswith("gave up after waiting"), timeout
    assert str(manual) in timeout
    assert f"train: {dataset.TRAIN_ARCHIVE}" in timeout, timeout
    for name in (dataset.TEST_ARCHIVE_PATCHED, dataset.TEST_ARCHIVE_2012, synthetic.PATCH_ARCHIVE):
        assert name in timeout, timeout
    assert dataset.VALIDATION_ARCHIVE not in timeout
    assert dataset.DOWNLOAD_INSTRUCTIONS in timeout, timeout

    assert "gave up after waiting" in log
    assert f"train: {dataset.TRAIN_ARCHIVE}" in log
    assert dataset.TEST_ARCHIVE_PATCHED in log and synthetic.PATCH_ARCHIVE in log
    assert f"validation: {dataset.VALIDATION_ARCHIVE}" not in log


def test_a_wrong_size_fails_verification_and_publishes_nothing(imagenet_dag, tmp_path, capfd):
    manual = tmp_path / "manual"
    generated = synthetic.generate_manual_dir(str(manual), splits=("validation",))
    data_dir = tmp_path / "data"
    run = imagenet_dag.test(
        run_conf={
            "manual_dir": generated.manual_dir,
            "data_dir": str(data_dir),
            "splits": ["validation"],
            "verify_checksums": True,
            "num_workers": 1,
        }
    )
    assert str(run.state) == "failed"
    out = capfd.readouterr()
    log = out.out + out.err
    published = dataset.PUBLISHED_ARCHIVES[dataset.VALIDATION_ARCHIVE]
    assert f"expected {published.size:,} bytes" in log
    assert "download" in log and "verify_checksums" in log
    assert not os.path.exists(version_dir(data_dir))
    assert not os.path.exists(data_dir / "imagenet2012")


def test_a_checksum_found_wrong_beside_the_conversion_publishes_nothing(
    imagenet_dag, tmp_path, capfd, monkeypatch
):
    """A first run converts while verify_archives hashes (nothing is cached to plan from);
    a sha256 that is not the published one fails the checks, and publish, which waits for
    them, never runs: the conversion's staging is dropped, nothing appears."""
    from tests.dags.conftest import task_states

    manual = tmp_path / "manual"
    generated = synthetic.generate_manual_dir(str(manual), splits=("validation",))
    path = os.path.join(generated.manual_dir, dataset.VALIDATION_ARCHIVE)
    published = dataset.PUBLISHED_ARCHIVES[dataset.VALIDATION_ARCHIVE]
    # the right size (the quick checks pass), another sha256: only the read finds it
    monkeypatch.setitem(dataset.PUBLISHED_ARCHIVES, dataset.VALIDATION_ARCHIVE,
                        dataclasses.replace(published, size=os.path.getsize(path)))
    data_dir = tmp_path / "data"
    run = imagenet_dag.test(run_conf={
        "manual_dir": generated.manual_dir, "data_dir": str(data_dir),
        "splits": ["validation"], "verify_checksums": True, "num_workers": 1,
    })
    states = task_states(imagenet_dag.dag_id, run.run_id)
    assert str(run.state) == "failed", states
    assert states["verify_archives"] == "failed", states
    assert states["convert[0]"] == "success", states  # it ran beside the checks
    assert states["publish"] == "upstream_failed", states
    assert states["release_lease"] == "success", states
    out = capfd.readouterr()
    assert f"expected sha256 {published.sha256}" in out.out + out.err
    assert not os.path.exists(version_dir(data_dir))
    assert not os.path.exists(data_dir / "imagenet2012" / ".5.1.0.incomplete")


def test_a_conf_key_that_is_no_param_fails_the_first_task(imagenet_dag, tmp_path, capfd):
    manual = tmp_path / "manual"
    synthetic.generate_manual_dir(str(manual), splits=("validation",))
    run = imagenet_dag.test(
        run_conf={"manual_dir": str(manual), "data_dir": str(tmp_path / "data"),
                  "splits": ["validation"], "num_shard": 2},
        mark_success_pattern=ONLY_THE_SENSOR,
    )
    ti = task_instance(imagenet_dag.dag_id, run.run_id, "wait_for_archives")
    assert str(ti.state) == "failed"
    out = capfd.readouterr()
    message = _exception_text(out.out + out.err, "AirflowFailException")
    assert message.startswith("unknown param 'num_shard' (did you mean 'num_shards'?)"), message
    assert not os.path.exists(tmp_path / "data")


def test_output_inside_the_manual_dir_fails_the_first_task(imagenet_dag, tmp_path, capfd):
    manual = tmp_path / "manual"
    synthetic.generate_manual_dir(str(manual), splits=("validation",))
    run = imagenet_dag.test(
        run_conf={"manual_dir": str(manual), "data_dir": str(manual), "splits": ["validation"]},
    )
    assert str(run.state) == "failed"
    ti = task_instance(imagenet_dag.dag_id, run.run_id, "wait_for_archives")
    assert str(ti.state) == "failed"
    out = capfd.readouterr()
    message = _exception_text(out.out + out.err, "AirflowFailException")
    assert f"inside manual_dir {manual}" in message, message
    assert sorted(os.listdir(manual)) == [dataset.VALIDATION_ARCHIVE]


def _scheduled_sensor_run(dag, conf: dict, timeout: float = 120):
    """What the scheduler does for a run of the schedule, for wait_for_archives alone: a DAG
    run of run_type "scheduled" in the metadata DB, its sensor run (Task SDK, in process, as
    dag.test() runs tasks) and rescheduled until it ends. dag.test() itself only makes
    manual runs. Returns (final state, seconds from the run's start)."""
    import time

    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.sdk import timezone
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    from tests.dags.conftest import AIRFLOW_ENV

    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(DagBag(dag_folder=AIRFLOW_ENV["AIRFLOW__CORE__DAGS_FOLDER"]), "dags-folder",
                   None)
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    now = timezone.utcnow()
    with create_session() as session:
        run = scheduler_dag.create_dagrun(
            run_id=f"scheduled__{now.isoformat()}", logical_date=now, data_interval=(now, now),
            run_after=now, conf=conf, run_type=DagRunType.SCHEDULED,
            triggered_by=DagRunTriggeredByType.TIMETABLE, state=DagRunState.RUNNING,
            start_date=now, session=session,
        )
        ti = run.get_task_instance("wait_for_archives", session=session)
        ti.try_number, ti.state = 1, TaskInstanceState.SCHEDULED
        session.commit()
        deadline = time.monotonic() + timeout
        while True:
            _run_task(ti=ti, task=dag.get_task("wait_for_archives"))
            session.expire_all()
            ti = run.get_task_instance("wait_for_archives", session=session)
            if ti.state != TaskInstanceState.UP_FOR_RESCHEDULE or time.monotonic() > deadline:
                return str(ti.state), (timezone.utcnow() - now).total_seconds()
            time.sleep(1)
            ti.state = TaskInstanceState.SCHEDULED
            session.commit()


def test_a_scheduled_run_does_not_wait_for_missing_archives(imagenet_dag, tmp_path, capfd):
    """A scheduled run must not hold the one run slot: it fails after
    IMAGENET2012_SCHEDULED_WAIT_MINUTES (3 s here) with what is missing, though
    wait_timeout_minutes would let it wait an hour; a triggered run waits (above)."""
    manual = tmp_path / "manual"
    synthetic.generate_manual_dir(str(manual), splits=("validation",))
    conf = {"manual_dir": str(manual), "data_dir": str(tmp_path / "data"),
            "splits": ["train", "validation"], "wait_timeout_minutes": 60}
    state, seconds = _scheduled_sensor_run(imagenet_dag, conf)
    assert state == "failed"
    assert 3 <= seconds < 60, seconds
    out = capfd.readouterr()
    log = out.out + out.err
    timeout = _exception_text(log, "AirflowSensorTimeout")
    assert timeout.startswith("scheduled run: gave up after waiting"), timeout
    assert f"train: {dataset.TRAIN_ARCHIVE}" in timeout and str(manual) in timeout, timeout
    assert dataset.VALIDATION_ARCHIVE not in timeout
    assert "Trigger the DAG" in timeout
