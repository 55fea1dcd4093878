"""The one run API: the CLI's `convert` checks, merges, skips what is up to date, publishes."""

from __future__ import annotations

import json
import os

import pytest

from imagenet_beam import dataset, run, settings, synthetic
from imagenet_beam.settings import Settings
from tests.conftest import convert, read_tfrecord_examples, version_dir


def _mtimes(path: str) -> dict[str, int]:
    return {n: os.stat(os.path.join(path, n)).st_mtime_ns for n in os.listdir(path)}


@pytest.fixture(scope="module")
def patch_input(tmp_path_factory):
    """The 2012 test tar and the patch, as image-net.org hands them out (no merged tar)."""
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("run_manual")),
        splits=("validation", "test"),
        test_archives=("2012", "patch"),
    )


@pytest.fixture(scope="module")
def patched_run(patch_input, tmp_path_factory):
    out = tmp_path_factory.mktemp("run_out")
    proc = convert(patch_input.manual_dir, out, "--splits=validation,test",
                   f"--test_patch={synthetic.PATCH_ARCHIVE}", "--direct_running_mode=in_memory")
    return out, proc


def test_the_cli_merges_the_patch_checks_the_archives_and_publishes(patch_input, patched_run):
    out, proc = patched_run
    path = version_dir(out)
    assert f"wrote {path}" in proc.stdout
    stored = read_tfrecord_examples(path, "test")
    assert patch_input.replaced_by_patch
    for member in patch_input.split("test"):
        assert stored[member.file_name] == (-1, member.data), member.file_name
    lineage = json.load(open(os.path.join(path, "lineage.json")))
    assert sorted(lineage["test_patch"]["replaced"]) == sorted(patch_input.replaced_by_patch)
    checked = {a["name"]: a for a in lineage["archives"]}
    assert set(checked) == {dataset.VALIDATION_ARCHIVE, dataset.TEST_ARCHIVE_2012,
                            synthetic.PATCH_ARCHIVE}
    for name, archive in checked.items():
        assert archive["size"] == os.path.getsize(os.path.join(patch_input.manual_dir, name))
        assert len(archive["sha256"]) == 64 and archive["verified_against"] is None
    assert lineage["fingerprint"] and lineage["options"]["test_patch"] == synthetic.PATCH_ARCHIVE


def test_an_identical_second_call_is_up_to_date_and_force_converts_again(
    patch_input, patched_run
):
    out, _ = patched_run
    path = version_dir(out)
    args = ("--splits=validation,test", f"--test_patch={synthetic.PATCH_ARCHIVE}",
            "--direct_running_mode=in_memory")
    before = _mtimes(path)
    again = convert(patch_input.manual_dir, out, *args)
    assert again.stdout.strip() == (
        f"{path} is up to date: published from the same archives and settings, nothing to do"
    )
    assert _mtimes(path) == before
    assert not os.path.exists(os.path.join(out, "imagenet2012", ".5.1.0.incomplete"))

    forced = convert(patch_input.manual_dir, out, *args, "--force")
    assert f"wrote {path}" in forced.stdout
    after = _mtimes(path)
    assert set(after) == set(before)
    assert all(after[name] != before[name] for name in before)  # every file written anew
    assert read_tfrecord_examples(path, "test")  # and it reads back


def test_checksums_are_verified_by_default(patch_input, tmp_path):
    proc = convert(patch_input.manual_dir, tmp_path, "--splits=validation",
                   "--verify_checksums=true", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert lines[-1].startswith("  - ") and "published by image-net.org" in lines[-1]
    assert dataset.VALIDATION_ARCHIVE in proc.stderr and "verify_checksums" in proc.stderr
    assert not os.path.exists(version_dir(tmp_path))


def test_a_first_run_converts_beside_the_checks_and_a_failed_one_publishes_nothing(tmp_path):
    """Nothing cached, nothing published: the conversion does not wait for the archives'
    reads. The patched test tar has no published size (only its sha256 says it is not
    image-net.org's), so only the read finds it wrong, once the conversion has run: nothing
    is published and the staging is gone."""
    generated = synthetic.generate_manual_dir(
        str(tmp_path / "manual"), splits=("test",), test_archives=("patched",)
    )
    proc = convert(generated.manual_dir, tmp_path / "out", "--splits=test",
                   "--verify_checksums=true", "--direct_running_mode=in_memory", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    published = dataset.PUBLISHED_ARCHIVES[dataset.TEST_ARCHIVE_PATCHED]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("  - ") and f"expected sha256 {published.sha256}" in lines[-1]
    log = proc.stderr
    assert "checking the archives beside the conversion" in log
    # the job ran to its end before the checks' failure (checked first, it would not run)
    assert "converting ['test']" in log and "test: 1/1 shards" in log
    assert not os.path.exists(version_dir(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out" / "imagenet2012" / ".5.1.0.incomplete")


def test_a_first_runs_checks_are_in_its_lineage_and_its_re_run_is_up_to_date(tmp_path):
    generated = synthetic.generate_manual_dir(str(tmp_path / "manual"), splits=("validation",))
    out = tmp_path / "out"
    first = convert(generated.manual_dir, out, *VALIDATION_ARGS)
    assert "checking the archives beside the conversion" in first.stderr
    lineage = json.load(open(os.path.join(version_dir(out), "lineage.json")))
    [archive] = lineage["archives"]
    path = os.path.join(generated.manual_dir, dataset.VALIDATION_ARCHIVE)
    assert archive["size"] == os.path.getsize(path) and len(archive["sha256"]) == 64
    again = convert(generated.manual_dir, out, *VALIDATION_ARGS)
    assert "is up to date" in again.stdout
    assert "beside the conversion" not in again.stderr  # cached: known before any work


VALIDATION_ARGS = ("--splits=validation", "--direct_running_mode=in_memory")


def _published_validation(tmp_path):
    """(generated input, data_dir, version dir) of a published validation-only conversion."""
    generated = synthetic.generate_manual_dir(str(tmp_path / "manual"), splits=("validation",))
    out = tmp_path / "out"
    convert(generated.manual_dir, out, *VALIDATION_ARGS)
    return generated, out, version_dir(out)


@pytest.mark.parametrize("damage", ["truncate_shard", "grow_shard", "delete_features"])
def test_a_damaged_published_version_is_converted_again(damage, tmp_path):
    generated, out, path = _published_validation(tmp_path)
    args = VALIDATION_ARGS
    [shard] = [n for n in os.listdir(path) if n.startswith("imagenet2012-validation.")]
    good = open(os.path.join(path, shard), "rb").read()
    if damage == "truncate_shard":
        open(os.path.join(path, shard), "wb").write(good[:-1])
    elif damage == "grow_shard":
        open(os.path.join(path, shard), "ab").write(b"\0")
    else:
        os.remove(os.path.join(path, "features.json"))

    again = convert(generated.manual_dir, out, *args)
    assert f"wrote {path}" in again.stdout, again.stdout
    assert open(os.path.join(path, shard), "rb").read() == good
    assert os.path.exists(os.path.join(path, "features.json"))


# --- the fingerprint: every setting that shapes output, and every archive, alone --------


def _checks() -> list[dict]:
    return [
        {"name": dataset.TRAIN_ARCHIVE, "size": 100, "sha256": "a" * 64},
        {"name": dataset.VALIDATION_ARCHIVE, "size": 200, "sha256": "b" * 64},
    ]


BASE = {"manual_dir": "/in", "data_dir": "/out"}
OTHER_VALUE = {
    "splits": ["train"],
    "file_format": settings.ARRAY_RECORD,
    "num_shards": 7,
    "on_corrupt": settings.ON_CORRUPT_SKIP,
    "decode_images": True,
    "resize": "shorter:256",
    "max_pixels": 1000,
    "patch_additions": True,
    "trust_layout_labels": True,
    "dataset": "imagenet2012_subset/1pct",
    "schema": settings.CLASSIC_SCHEMA,
    "tfrecord_index": True,
}


def test_every_setting_that_shapes_output_is_in_the_fingerprint_alone():
    shaping = {s.name for s in settings.SETTINGS if s.shapes_output}
    assert shaping == set(OTHER_VALUE)  # a new such setting needs a value here
    base = run.fingerprint(Settings.from_mapping(BASE), _checks())
    for name, value in OTHER_VALUE.items():
        changed = Settings.from_mapping({**BASE, name: value})
        assert run.fingerprint(changed, _checks()) != base, name


def test_the_other_settings_leave_the_fingerprint_alone():
    base = run.fingerprint(Settings.from_mapping(BASE), _checks())
    for changes in ({"manual_dir": "/elsewhere"}, {"data_dir": "gs://b/x"},
                    {"verify_checksums": False}, {"force": True}, {"overwrite": True},
                    {"test_patch": "patch.tar"}):
        assert run.fingerprint(Settings.from_mapping({**BASE, **changes}), _checks()) == base


@pytest.mark.parametrize("field", ["name", "size", "sha256"])
@pytest.mark.parametrize("which", [0, 1])
def test_each_archive_checksum_is_in_the_fingerprint_alone(field, which):
    s = Settings.from_mapping(BASE)
    checks = _checks()
    base = run.fingerprint(s, checks)
    changed = [dict(c) for c in checks]
    changed[which][field] = {"name": "other.tar", "size": 1, "sha256": "c" * 64}[field]
    assert run.fingerprint(s, changed) != base
    assert run.fingerprint(s, list(reversed(checks))) == base  # order does not matter


# --- nothing of the user's is lost -----------------------------------------------------


def _files(directory) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(root, n), directory): open(os.path.join(root, n), "rb").read()
        for root, _, names in os.walk(directory) for n in names
    }


def test_a_manual_dir_inside_the_output_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    inside = version_dir(out)
    synthetic.generate_manual_dir(inside, splits=("validation",))
    before = _files(inside)
    proc = convert(inside, out, "--splits=validation", "--overwrite", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: manual_dir {inside} is inside the output's version directory"
    )
    assert _files(inside) == before
    assert sorted(os.listdir(out)) == ["imagenet2012"]  # no work dir, no cache was made


def test_an_output_inside_the_manual_dir_is_refused(tmp_path):
    generated = synthetic.generate_manual_dir(str(tmp_path / "manual"), splits=("validation",))
    proc = convert(generated.manual_dir, generated.manual_dir, "--splits=validation",
                   check=False)
    assert proc.returncode == 2
    assert "inside manual_dir" in proc.stderr and "choose a data_dir outside" in proc.stderr
    assert sorted(os.listdir(generated.manual_dir)) == [dataset.VALIDATION_ARCHIVE]


@pytest.mark.parametrize("published", [True, False])
def test_files_of_the_users_in_a_version_dir_are_never_deleted(published, tmp_path):
    generated, out, path = _published_validation(tmp_path)
    args = VALIDATION_ARGS
    if not published:  # what a killed publication leaves: no marker
        os.remove(os.path.join(path, "_COMPLETE"))
    os.makedirs(os.path.join(path, "checkpoints"))
    open(os.path.join(path, "checkpoints", "step-100"), "w").write("weights")
    open(os.path.join(path, "my_notes.txt"), "w").write("notes")
    before = _files(path)

    proc = convert(generated.manual_dir, out, *args, "--num_shards=2", "--overwrite",
                   check=False)
    assert proc.returncode == 2, proc.stdout
    message = proc.stderr.strip().splitlines()[-1]
    assert "holds files that no conversion wrote (checkpoints/step-100, my_notes.txt)" in message
    assert "Move them out of the version directory" in message
    assert _files(path) == before


def test_publish_takes_exactly_the_splits_this_run_staged(tmp_path):
    generated = synthetic.generate_manual_dir(str(tmp_path / "manual"), splits=("validation",))
    out = tmp_path / "out"
    convert(generated.manual_dir, out, "--splits=validation", "--stage_only", "--run_id=other",
            "--direct_running_mode=in_memory")
    with pytest.raises(run.ConvertError, match=r"holds validation staged by another "
                       r"conversion into the same data_dir, not by this run \(mine\)"):
        run.publish(str(out), splits=["validation"], run_id="mine")
    with pytest.raises(run.ConvertError, match=r"asked for validation, test but .* holds "
                       r"validation \(missing: test\)"):
        run.publish(str(out), splits=["validation", "test"], run_id="other")
    assert not os.path.exists(version_dir(out))
    record = run.publish(str(out), splits=["validation"], run_id="other")
    assert list(record.splits) == ["validation"]


def test_publish_derives_the_format_from_the_shards_written(tmp_path):
    """Records of one run beside shards of another (what two conversions racing into one
    staging directory leave) are refused, not published as a version that cannot load."""
    generated = synthetic.generate_manual_dir(str(tmp_path / "manual"), splits=("validation",))
    out = tmp_path / "out"
    convert(generated.manual_dir, out, "--splits=validation", "--stage_only", "--run_id=r",
            "--direct_running_mode=in_memory")
    record_path = os.path.join(out, "imagenet2012", ".5.1.0.incomplete", "_work",
                               "split-validation.json")
    record = json.load(open(record_path))
    record["settings"]["file_format"] = "array_record"  # as the other run's record says
    json.dump(record, open(record_path, "w"))
    with pytest.raises(run.ConvertError, match="are tfrecord, not the array_record"):
        run.publish(str(out), splits=["validation"], run_id="r")
    assert not os.path.exists(version_dir(out))
