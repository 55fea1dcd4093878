"""The benchmark runs end to end at a tiny size (speed itself is shown by `make bench`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_benchmark_compares_with_tfds_and_writes_its_figures(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.run", "--num_images=120",
            "--variants=passthrough,validate,classic,dask", "--skip_dag", "--no-full_count",
            f"--work_dir={tmp_path}",
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
    assert set(figures) == {
        "tfds_builder", "ours_cli", "ours_cli_cached", "ours_cli_validate", "ours_cli_classic",
        "ours_cli_dask",
    }
    # the classic schema's run is set beside the TFDS schema's on the same input
    classic = figures["ours_cli_classic"]
    assert classic["ratio_to_tarballs"] == (
        figures["ours_cli_cached"]["wall_s"] / classic["wall_s"]
    )
    assert (tmp_path / "out-ours" / "imagenet2012_classic" / "1.0.0" / "_COMPLETE").exists()
    # the DaskRunner's figure is a local cluster's run (its shards checked against the
    # DirectRunner's by the benchmark itself)
    assert figures["ours_cli_dask"]["peak_processes"] > 2
    # the DirectRunner's default on an input this small (under run.THREADS_BELOW_BYTES):
    # threads, in the process itself, not a worker process a core
    assert figures["ours_cli_cached"]["peak_processes"] == 1
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


def test_benchmark_measures_an_imagefolder_tree_beside_the_tarballs(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.run", "--num_images=120", "--layout=imagefolder",
            "--variants=passthrough", "--skip_dag", "--no-full_count", f"--work_dir={tmp_path}",
            f"--out={out}", "--repeat=1",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "vs tars" in proc.stdout
    results = json.loads(out.read_text())
    assert results["layout"] == "imagefolder"
    figures = {f["name"]: f for f in results["runs"][0]["figures"]}
    assert set(figures) == {
        "tfds_builder", "ours_cli", "ours_cli_cached", "index_tarballs", "index_imagefolder",
        "ours_imagefolder", "ours_imagefolder_cached",
    }
    # The same images, extracted: the tree's files are the tarballs' members.
    tree = tmp_path / "input-120-imagefolder"
    assert len([p for p in tree.rglob("*.JPEG")]) == 120
    assert all(p.is_dir() and p.name.startswith("n") for p in (tree / "train").iterdir())
    assert sorted(p.name for p in tree.iterdir()) == [
        "extracted_from.json", "test", "train", "val"
    ]
    for name, tarballs in (("index_imagefolder", "index_tarballs"),
                           ("ours_imagefolder", "ours_cli"),
                           ("ours_imagefolder_cached", "ours_cli_cached")):
        figure = figures[name]
        assert figure["num_images"] == 120 and figure["peak_tree_rss_mib"] > 0
        assert figure["ratio_to_tarballs"] == figures[tarballs]["wall_s"] / figure["wall_s"]
    # the index step is timed inside its process: well under the process's own wall time
    assert figures["index_imagefolder"]["wall_s"] < 5
    # TFDS's shards were removed (the tree is a second copy of the input), its metadata kept
    tfds_out = tmp_path / "out-tfds" / "imagenet2012" / "5.1.0"
    assert (tfds_out / "dataset_info.json").exists()
    assert not list(tfds_out.glob("*.tfrecord*"))


def test_benchmark_runs_the_dag_under_a_real_scheduler(tmp_path):
    """`airflow standalone` (scheduler with the LocalExecutor, DAG processor, API server):
    a first run, a re-run after one output setting changed, and a no-op re-run, each
    triggered through the REST API and timed to the run's end, with its tasks' times."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.run", "--num_images=120", "--no-full_count",
            "--variants=passthrough", "--skip_dag_test", f"--work_dir={tmp_path}",
            f"--out={out}", "--repeat=1",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())
    [run] = results["runs"]
    figures = {f["name"]: f for f in run["figures"]}
    assert {"ours_dag_first", "ours_dag_rerun", "ours_dag_noop"} <= set(figures)
    tasks = run["dag_tasks"]
    assert set(tasks) == {"fixed_cost", "ours_dag_first", "ours_dag_rerun", "ours_dag_noop"}
    for name in ("ours_dag_first", "ours_dag_rerun"):
        assert {"verify_archives", "plan_conversion", "convert[0]", "publish"} <= set(
            tasks[name]), tasks[name]
        # a run lasts at least as long as its longest task
        assert figures[name]["wall_s"] >= max(tasks[name].values())
    # the re-run changed its output: the DALI index beside each shard
    version = tmp_path / "out-dag" / "imagenet2012" / "5.1.0"
    assert list(version.glob("*.tfrecord-*.idx"))
    lineage = json.loads((version / "lineage.json").read_text())
    assert lineage["options"]["tfrecord_index"] is True
    fixed = tasks["fixed_cost"]
    assert fixed["wall_s"] > 0 and fixed["convert[0]"] > 0
    assert "DAG under the scheduler" in proc.stdout
    # each publication's Asset events run the example consumer: the next measured run
    # waits for it instead of sharing the cores with it
    waits = [line for line in proc.stdout.splitlines() if "waited for" in line]
    assert any(line.startswith("before ours_dag_rerun: waited for imagenet2012_consumer/")
               for line in waits), proc.stdout[-3000:]


def test_the_projection_fits_per_image_and_per_byte_costs():
    from benchmarks import run as bench

    def wall(n, b, fixed, per_image, per_byte):
        return fixed + per_image * n + per_byte * b

    inputs = [(20_000, 2.2e9), (40_000, 4.4e9), (1_431_167, 2.1e9)]
    runs = [{"figures": [
        {"name": "tfds_builder", "num_images": n, "input_bytes": b,
         "wall_s": wall(n, b, 4.0, 150e-6, 5e-9)},
        {"name": "ours_cli_cached", "num_images": n, "input_bytes": b,
         "wall_s": wall(n, b, 3.0, 40e-6, 2e-9)},
        {"name": "ours_dag_noop", "num_images": n, "input_bytes": b, "wall_s": 9.0},
    ]} for n, b in inputs]
    proj = bench.projection(runs, cores=(2, 16))
    assert proj["fits"]["ours_cli_cached"] == {
        "fixed_s": 3.0, "per_image_us": 40.0, "per_gb_s": 2.0}
    n, b = bench.FULL_IMAGENET["num_images"], bench.FULL_IMAGENET["input_bytes"]
    two, sixteen = proj["cores"]["2"], proj["cores"]["16"]
    assert two["tfds_builder"]["wall_s"] == round(wall(n, b, 4.0, 150e-6, 5e-9), 1)
    # the builder is one process; ours divides its work among the cores (the fit is of
    # this machine's)
    for cores, projected in ((2, two), (16, sixteen)):
        assert projected["tfds_builder"]["wall_s"] == two["tfds_builder"]["wall_s"]
        assert projected["ours_cli_cached"]["wall_s"] == round(
            3.0 + (40e-6 * n + 2e-9 * b) * os.cpu_count() / cores, 1)
        assert projected["ours_cli_cached"]["ratio_to_tfds"] == round(
            projected["tfds_builder"]["wall_s"] / projected["ours_cli_cached"]["wall_s"], 2)
    assert "ours_dag_noop" not in two  # not a per-image cost: not projected
