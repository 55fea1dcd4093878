"""What a conversion tells while it runs: progress lines and Beam Metrics counters."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from imagenet_beam import dataset, pipeline, progress, shards, sources, synthetic
from imagenet_beam.layout import StagingLayout
from imagenet_beam.settings import Settings
from tests.conftest import ROOT, convert

LINE = re.compile(
    r"INFO imagenet_beam\.progress: (?P<split>[a-z]+): (?P<shards>\d+)/(?P<num_shards>\d+) "
    r"shards, (?P<done>[\d,]+)/(?P<total>[\d,]+) images \((?P<percent>\d+)%\)(?P<rest>.*)"
)


def _progress_lines(text: str) -> dict[str, list[re.Match]]:
    found: dict[str, list[re.Match]] = {}
    for line in text.splitlines():
        match = LINE.fullmatch(line)
        if match:
            found.setdefault(match["split"], []).append(match)
    return found


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One fixed (CMYK) and one skipped (truncated) image besides plain ones."""
    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("progress_manual")),
        num_classes=3, train_per_class=5, num_validation=8,
        splits=("train", "validation"), awkward=("cmyk_other_name",), broken=("truncated",),
    )


def test_the_cli_reports_each_shard_with_the_split_totals_and_ends_at_100_percent(
    generated, tmp_path
):
    proc = convert(generated.manual_dir, tmp_path, "--splits=train,validation",
                   "--num_shards=3", "--on_corrupt=skip", "--direct_running_mode=in_memory")
    lines = _progress_lines(proc.stderr)
    assert set(lines) == {"train", "validation"}, proc.stderr
    for split, matches in lines.items():
        total = len(generated.split(split))
        assert {int(m["total"].replace(",", "")) for m in matches} == {total}, split
        assert {int(m["num_shards"]) for m in matches} == {3}
        # The line when planning ends, then one per finished shard.
        assert [int(m["shards"]) for m in matches] == [0, 1, 2, 3]
        last = matches[-1]
        assert (last["done"].replace(",", ""), last["percent"]) == (str(total), "100")
        assert re.fullmatch(r", [\d,]+ images/s, written in \d+ s", last["rest"]), last[0]
        assert all(int(m["percent"]) < 100 for m in matches[:-1])
    assert "about" not in proc.stderr.split("(100%)")[-1]


def test_the_metrics_counters_equal_what_the_shards_hold(generated, tmp_path):
    staged = StagingLayout(str(tmp_path / "staging"))
    os.makedirs(staged.results_dir)
    settings = Settings.from_mapping({
        "manual_dir": generated.manual_dir, "data_dir": str(tmp_path), "num_shards": 2,
        "on_corrupt": "skip", "splits": ["train", "validation"],
    })
    inputs = [
        (dataset.TRAIN, os.path.join(generated.manual_dir, dataset.TRAIN_ARCHIVE)),
        (dataset.VALIDATION, os.path.join(generated.manual_dir, dataset.VALIDATION_ARCHIVE)),
    ]
    p = beam.Pipeline(runner="DirectRunner",
                      options=PipelineOptions(["--direct_running_mode=in_memory"]))
    pipeline.build_pipeline(p, sources.get(), inputs, settings, staged)
    result = p.run()
    result.wait_until_finish()

    query = result.metrics().query(MetricsFilter().with_namespace(pipeline.METRICS_NAMESPACE))
    counters = {c.key.metric.name: c.committed for c in query["counters"]}
    results = list(shards.iter_results(staged.results_dir))
    members = len(generated.split("train")) + len(generated.split("validation"))
    assert counters == {
        "images_indexed": members,
        "images_read": members,
        "images_written": sum(r.num_examples for r in results),
        "images_fixed": sum(len(r.fixed) for r in results),
        "images_skipped": sum(len(r.skipped) for r in results),
        "bytes_written": sum(r.num_bytes for r in results),
        "shards_written": 4,
    }
    assert counters["images_fixed"] >= 1 and counters["images_skipped"] == 1
    assert counters["images_written"] == members - 1


def test_a_line_comes_every_heartbeat_while_nothing_finishes(tmp_path, caplog):
    staged = StagingLayout(str(tmp_path / "staging"))
    reporter = progress.ProgressReporter(staged, ["train"], heartbeat=0.2, poll=0.05)
    with caplog.at_level(logging.INFO, logger="imagenet_beam.progress"):
        reporter.start()
        time.sleep(0.7)
        reporter.stop(completed=False)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 2, lines
    assert all(re.fullmatch(r"train: indexing the archives and planning shards \(\d+ s so far\)",
                            line) for line in lines), lines


def test_a_line_says_how_far_how_fast_and_how_long_still():
    line = progress.SplitProgress(
        "train", started=0.0, num_shards=1024, num_images=1_281_167, planned_at=100.0,
        done={i: 515_204 // 412 + (1 if i < 515_204 % 412 else 0) for i in range(412)},
    ).line(now=100.0 + 515_204 / 3510)
    assert line == ("train: 412/1024 shards, 515,204/1,281,167 images (40%), 3,510 images/s, "
                    "about 4 min left")


def test_the_beam_main_launcher_writes_everything_but_the_error_line_to_stdout(
    generated, tmp_path
):
    """What Airflow's Beam operator logs as INFO (stdout) and as WARNING (stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = [sys.executable, "-m", "imagenet_beam.beam_main", "--runner=DirectRunner",
            f"--manual_dir={generated.manual_dir}", "--splits=train",
            "--verify_checksums=false", "--stage_only=true", "--direct_running_mode=in_memory"]
    ok = subprocess.run([*args, f"--data_dir={tmp_path / 'ok'}", "--on_corrupt=skip"],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr == ""
    lines = _progress_lines(ok.stdout)["train"]
    assert lines[-1]["percent"] == "100"

    bad = subprocess.run([*args, f"--data_dir={tmp_path / 'bad'}"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert bad.returncode != 0
    [line] = bad.stderr.splitlines()
    assert line.startswith("error: train image "), bad.stderr
    assert "INFO imagenet_beam.run: converting ['train']" in bad.stdout
