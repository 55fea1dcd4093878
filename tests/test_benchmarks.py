"""The benchmark runs end to end at a tiny size (speed itself is shown by `make bench`)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_benchmark_compares_with_tfds_and_writes_its_figures(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.run", "--num_images=120",
            "--variants=passthrough,validate", "--skip_dag", f"--work_dir={tmp_path}",
            f"--out={out}", "--repeat=2",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tfds_builder" in proc.stdout and "vs TFDS" in proc.stdout
    results = json.loads(out.read_text())
    assert results["machine"]["cpus"] >= 1
    assert results["repeat"] == 2
    [run] = results["runs"]
    figures = {f["name"]: f for f in run["figures"]}
    assert set(figures) == {"tfds_builder", "ours_cli", "ours_cli_cached", "ours_cli_validate"}
    for figure in figures.values():
        assert figure["num_images"] == 120
        assert figure["wall_s"] > 0 and figure["peak_tree_rss_mib"] > 0
        assert figure["images_per_s"] > 0 and figure["ratio_to_tfds"] > 0
        # Each figure is the median of its rounds (of two: their mean).
        rounds = figure["wall_s_rounds"]
        assert len(rounds) == 2 and figure["wall_s"] == sum(rounds) / 2
    ratio = figures["ours_cli"]["ratio_to_tfds"]
    assert ratio == figures["tfds_builder"]["wall_s"] / figures["ours_cli"]["wall_s"]
    # Both sides converted the same input: their outputs hold the same number of examples.
    tfds_info = json.loads(
        (tmp_path / "out-tfds" / "imagenet2012" / "5.1.0" / "dataset_info.json").read_text()
    )
    tfds_count = sum(sum(int(n) for n in s["shardLengths"]) for s in tfds_info["splits"])
    assert tfds_count == 120
