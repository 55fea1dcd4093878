"""Input layouts through the real DAG (`dag.test()`, SQLite): an extracted ImageFolder tree
publishes the tarballs' shards; the sensor and verify_archives say which layout each split
is in, what is missing in that layout's words, and refuse a split held in two layouts."""

from __future__ import annotations

import json
import os

import pytest

from imagenet_beam import dataset, settings, synthetic, synthetic_layouts
from tests.conftest import convert, layout_images, published_shard_digests, version_dir
from tests.dags.conftest import task_instance, task_states
from tests.dags.test_sensor_and_checks import ONLY_THE_SENSOR, _exception_text

SPLITS = ["train", "validation", "test"]
IMAGEFOLDER = "an extracted ImageFolder tree"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return layout_images(str(tmp_path_factory.mktemp("layouts_dag_tarballs")))


def _log(capfd, caplog=None) -> str:
    """What the tasks logged: Airflow's task loggers write to the process's output, the
    stdlib loggers of imagenet_airflow/imagenet_beam reach pytest's log capture."""
    out = capfd.readouterr()
    return out.out + out.err + (caplog.text if caplog else "")


def test_the_form_lists_the_layouts(imagenet_dag):
    layout = imagenet_dag.params.get_param("layout")
    assert layout.value is None  # recognised from what is there
    assert layout.schema["type"] == ["null", "string"]
    assert layout.schema["enum"] == [*settings.LAYOUTS, None]
    for name in settings.LAYOUTS:
        assert name in layout.description
        assert layout.schema["values_display"][name].startswith(f"{name}: ")
    # the dropdown's empty choice says what it means (the form would show "null")
    assert layout.schema["values_display"]["null"].startswith("any: recognised")
    trust = imagenet_dag.params.get_param("trust_layout_labels")
    assert trust.value is False and "lineage.json" in trust.description
    for name in ("ImageFolder", "Kaggle", "Hugging Face"):
        assert name in imagenet_dag.doc_md


def test_a_layout_that_is_none_of_the_list_is_refused_at_trigger(imagenet_dag, tmp_path):
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError, match="layout"):
        imagenet_dag.test(run_conf={
            "manual_dir": str(tmp_path), "data_dir": str(tmp_path / "out"),
            "layout": "pytorch",
        })


def test_an_imagefolder_tree_publishes_the_tarballs_shards(imagenet_dag, images, tmp_path,
                                                           capfd, caplog):
    tarballs_out = tmp_path / "from-tarballs"
    convert(images.manual_dir, tarballs_out, f"--test_patch={synthetic.PATCH_ARCHIVE}",
            "--num_shards=2")
    tree = tmp_path / "tree"
    written = synthetic_layouts.write_layout(
        images, "imagefolder", str(tree), val_class_folders=True, strays=True
    )
    capfd.readouterr()
    conf = {"manual_dir": str(tree), "data_dir": str(tmp_path / "data"), "splits": SPLITS,
            "verify_checksums": False, "num_shards": 2, "num_workers": 1}
    run = imagenet_dag.test(run_conf=conf)
    states = task_states(imagenet_dag.dag_id, run.run_id)
    assert str(run.state) == "success", states
    log = _log(capfd, caplog)
    assert published_shard_digests(conf["data_dir"]) == published_shard_digests(tarballs_out)

    # Both the sensor and verify_archives say where each split was found, in which layout.
    found = (f"train: {IMAGEFOLDER} ({tree}/train); validation: {IMAGEFOLDER} ({tree}/val); "
             f"test: {IMAGEFOLDER} ({tree}/test)")
    assert f"every split is there: {found}" in log, log[-5000:]
    assert f"found {found}" in log
    # and that the devkit, optional, is not there (what it would add)
    assert f"every split is there: {found}; no devkit (optional: with " in log
    # verify_archives: the counted, hashed trees (no published checksum), strays left out
    count = len(images.split("train"))
    assert f"imagefolder:train: {count:,} images, " in log
    assert "stray file(s) left out" in log
    with open(os.path.join(version_dir(conf["data_dir"]), "lineage.json")) as f:
        lineage = json.load(f)
    assert {a["name"] for a in lineage["archives"]} == {f"imagefolder:{s}" for s in SPLITS}
    assert sum(len(a["ignored"]) for a in lineage["archives"]) > 0
    assert written.strays


def test_a_missing_split_is_named_in_the_layouts_words(imagenet_dag, images, tmp_path, capfd):
    tree = tmp_path / "tree"
    synthetic_layouts.write_layout(images, "imagefolder", str(tree), splits=["train",
                                                                            "validation"])
    capfd.readouterr()
    run = imagenet_dag.test(
        run_conf={"manual_dir": str(tree), "data_dir": str(tmp_path / "data"), "splits": SPLITS,
                  "wait_timeout_minutes": 0.05},
        mark_success_pattern=ONLY_THE_SENSOR,
    )
    ti = task_instance(imagenet_dag.dag_id, run.run_id, "wait_for_archives")
    assert str(ti.state) == "failed"
    log = _log(capfd)
    assert f"found train: {IMAGEFOLDER} ({tree}/train); validation: {IMAGEFOLDER}" in log
    timeout = _exception_text(log, "AirflowSensorTimeout")
    assert timeout.startswith("gave up after waiting"), timeout
    assert f"missing in {tree} ({IMAGEFOLDER}):\n  test: a folder test/\n" in timeout, timeout
    assert "point manual_dir at the folder holding train/" in timeout
    # not the tarballs' list: manual_dir is an ImageFolder tree
    assert dataset.TRAIN_ARCHIVE not in timeout and dataset.TEST_ARCHIVE_2012 not in timeout
    assert "Also accepted in manual_dir: the tarballs from image-net.org" in timeout


@pytest.fixture
def validation_twice(images, tmp_path):
    """validation/ extracted beside the validation tarball."""
    manual = tmp_path / "manual"
    synthetic_layouts.write_layout(images, "imagefolder", str(manual), splits=["validation"],
                                   val_folder_name="validation")
    os.symlink(os.path.join(images.manual_dir, dataset.VALIDATION_ARCHIVE),
               manual / dataset.VALIDATION_ARCHIVE)
    return manual


def _two_layouts_message(log: str, manual) -> str:
    message = _exception_text(log, "AirflowFailException")
    assert message.startswith(
        f"{manual} holds the validation split twice, as the tarballs from image-net.org "
        f"({manual}/{dataset.VALIDATION_ARCHIVE}) and as {IMAGEFOLDER} ({manual}/validation)"
    ), message
    assert "--layout" in message
    return message


@pytest.mark.parametrize("task_id", ["wait_for_archives", "verify_archives"])
def test_a_split_in_two_layouts_fails_naming_both(imagenet_dag, validation_twice, tmp_path,
                                                  capfd, task_id):
    conf = {"manual_dir": str(validation_twice), "data_dir": str(tmp_path / "data"),
            "splits": ["validation"], "verify_checksums": False, "num_workers": 1}
    capfd.readouterr()
    # verify_archives on its own: the sensor (which would fail first) marked done
    pattern = ONLY_THE_SENSOR if task_id == "wait_for_archives" else "^wait_for_archives$"
    run = imagenet_dag.test(run_conf=conf, mark_success_pattern=pattern)
    ti = task_instance(imagenet_dag.dag_id, run.run_id, task_id)
    assert str(ti.state) == "failed"
    assert ti.try_number == 1  # not retried: the same files would be there
    log = _log(capfd)
    _two_layouts_message(log, validation_twice)
    # The failure is the message, raised where the task noticed it: no traceback of ours.
    failure = log[log.rindex("Traceback"):log.rindex("AirflowFailException: ")]
    assert "imagenet_beam" not in failure and "sources" not in failure, failure
    assert not os.path.exists(tmp_path / "data" / "imagenet2012" / "5.1.0")


def test_choosing_the_layout_in_the_form_resolves_two(imagenet_dag, validation_twice, tmp_path,
                                                      capfd):
    capfd.readouterr()
    run = imagenet_dag.test(
        run_conf={"manual_dir": str(validation_twice), "data_dir": str(tmp_path / "data"),
                  "splits": ["validation"], "layout": "imagefolder"},
        mark_success_pattern=ONLY_THE_SENSOR,
    )
    ti = task_instance(imagenet_dag.dag_id, run.run_id, "wait_for_archives")
    assert str(ti.state) == "success"
    assert (f"every split is there: validation: {IMAGEFOLDER} ({validation_twice}/validation)"
            in _log(capfd))
