"""One table of settings: it validates, gives flags back, feeds lineage and the DAG's form."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from imagenet_beam import cli, settings
from imagenet_beam.settings import Settings, SettingsError
from tests.conftest import ROOT

BASE = {"manual_dir": "/in", "data_dir": "gs://bucket/out"}


def test_defaults():
    s = Settings.from_mapping(BASE)
    assert s.splits == ["train", "validation", "test"]
    assert s.file_format == "tfrecord" and s.on_corrupt == "fail"
    assert s.verify_checksums is True and s.decode_images is False and s.force is False
    assert s.num_shards is None and s.resize is None and s.test_patch is None
    assert s.max_pixels == settings.DEFAULT_MAX_PIXELS


@pytest.mark.parametrize(("given", "message"), [
    ({"file_format": "parquet"}, "--file_format=parquet: choose one of tfrecord, array_record"),
    ({"on_corrupt": "ignore"}, "--on_corrupt=ignore: choose one of fail, skip"),
    ({"num_shards": 0}, "--num_shards=0: give a number from 1 up"),
    ({"num_shards": "many"}, "--num_shards=many: give a whole number"),
    ({"max_pixels": settings.MAX_PIXELS_CEILING + 1}, "--max_pixels="),
    ({"resize": "256"}, "--resize=256: "),
    ({"splits": "train,holdout"}, "--splits=train,holdout is not a list of"),
    ({"decode_images": "maybe"}, "--decode_images=maybe: give true or false"),
    ({"manual_dir": ""}, "--manual_dir is required"),
])
def test_bad_values_are_refused_with_what_to_give(given, message):
    with pytest.raises(SettingsError) as error:
        Settings.from_mapping({**BASE, **given})
    assert str(error.value).startswith(message)


def test_a_dali_index_is_only_for_tfrecord_shards():
    assert Settings.from_mapping({**BASE, "tfrecord_index": "true"}).tfrecord_index is True
    with pytest.raises(SettingsError) as error:
        Settings.from_mapping({**BASE, "file_format": "array_record", "tfrecord_index": True})
    message = str(error.value)
    assert "--tfrecord_index" in message and "--file_format=array_record" in message
    assert "ArrayRecordDataSource" in message  # what to read them with instead
    assert "tfrecord_index" in Settings.from_mapping(BASE).fingerprint_fields()


def test_older_names_are_still_taken():
    assert Settings.from_mapping({**BASE, "validate_images": True}).decode_images is True
    assert Settings.from_mapping({**BASE, "validate": True}).decode_images is True
    given, _ = cli.split_args(["--manual_dir=/in", "--data_dir=/out", "--validate"])
    assert Settings.from_mapping(given).decode_images is True


def test_flags_give_the_same_settings_back_and_leave_beams_options_alone():
    s = Settings.from_mapping({
        **BASE, "splits": "validation,train", "file_format": "array_record", "num_shards": 3,
        "on_corrupt": "skip", "decode_images": True, "resize": "max:512",
        "verify_checksums": False, "test_patch": "patch.tar", "max_pixels": 12345,
    })
    flags = s.to_flags()
    given, beam_args = cli.split_args([*flags, "--runner=DirectRunner", "--project=p"])
    assert Settings.from_mapping(given) == s
    assert beam_args == ["--runner=DirectRunner", "--project=p"]
    assert s.splits == ["train", "validation"]  # the canonical order


def test_lineage_and_fingerprint_fields_come_from_the_table():
    s = Settings.from_mapping(BASE)
    assert set(s.lineage()) == {x.name for x in settings.SETTINGS if x.in_lineage}
    assert "force" not in s.lineage() and "staging_dir" not in s.lineage()
    assert set(s.fingerprint_fields()) == {x.name for x in settings.SETTINGS if x.shapes_output}


def test_the_form_params_are_the_tables_json_schemas():
    form = settings.form_params(defaults={"test_patch": "patch.tar"})
    assert list(form) == [s.name for s in settings.SETTINGS if s.in_form]
    assert form["file_format"]["enum"] == list(settings.FILE_FORMATS)
    assert form["on_corrupt"]["enum"] == list(settings.ON_CORRUPT_POLICIES)
    assert form["resize"]["pattern"] == settings.RESIZE_PATTERN
    assert form["splits"]["items"]["enum"] == ["train", "validation", "test"]
    assert form["num_shards"]["type"] == ["null", "integer"]
    assert form["test_patch"]["default"] == "patch.tar"
    for name, schema in form.items():
        assert schema["description"] == settings.BY_NAME[name].help
    with pytest.raises(SettingsError, match="no such settings"):
        settings.form_params(defaults={"colour": "red"})


def test_the_settings_table_imports_without_beam_or_tensorflow():
    code = (
        "import sys; import imagenet_beam.settings, imagenet_beam.layout; "
        "print(sorted(m for m in ('apache_beam', 'tensorflow', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_convert_help_lists_every_public_setting():
    proc = subprocess.run([sys.executable, "-m", "imagenet_beam", "convert", "--help"],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    for s in settings.SETTINGS:
        assert (f"--{s.name}" in proc.stdout) != s.internal, s.name


def test_unknown_flags_are_refused_with_the_nearest_name(tmp_path):
    from tests.conftest import convert

    proc = convert(tmp_path, tmp_path / "out", "--num_shard=8", "--direct_num_worker=2",
                   check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: unknown flag --num_shard (did you mean --num_shards?); unknown flag "
        "--direct_num_worker (did you mean --direct_num_workers?). `python -m imagenet_beam "
        "convert --help` lists the flags."
    )
    assert not os.path.exists(tmp_path / "out")


def test_beams_own_options_pass_by_name():
    known = cli.beam_option_names()
    for flag in ("--runner", "--direct_num_workers", "--direct_running_mode", "--project",
                 "--region", "--temp_location", "--staging_location", "--setup_file",
                 "--job_name", "--worker_machine_type", "--max_num_workers",
                 "--service_account_email", "--no_wait_until_finish", "--labels",
                 "--template_location"):
        assert flag in known, flag
    assert cli.unknown_flags(["--runner=DirectRunner", "--project", "p"]) is None
