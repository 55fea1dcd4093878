"""Our conversion against TFDS's own `imagenet2012` builder, on the same input, in one run.

    python -m benchmarks.run [--sizes 20000,40000 | --num_images N | --manual_dir DIR]
                             [--variants passthrough,validate,resize,classic,dask,threads]
                             [--skip_dag] [--no-full_count] [--full_count_repeat 1]
                             [--repeat 3] [--layout tarballs|imagefolder]

For every input (20k and 40k realistic images by default, then the full-count rehearsal:
ImageNet's 1,431,167 members in its archives' shapes as tiny JPEGs) it times, each in a
fresh process: TFDS's builder (`tfds build`'s code path); our CLI as a first run does it
(`ours_cli`: the archive checks hash and walk every archive, then the conversion), and again
with the archive checks cached as a re-run finds them (`ours_cli_cached`: the conversion
alone), also in the requested variants (`dask`: the DaskRunner on a local cluster of one
worker process per core, its shards checked to be the DirectRunner's; `threads`: the
DirectRunner's thread mode beside its default process mode, the same shards; at full count
only `threads`). Then the whole Airflow DAG: once with `airflow dags test` (first input
only), and on every input under a real scheduler with the LocalExecutor (`airflow
standalone`, runs triggered through the REST API: `benchmarks.scheduler`): a first run
(`ours_dag_first`: archives hashed), a re-run after one output setting changed
(`ours_dag_rerun`: converted again, checks cached) and a no-op re-run (`ours_dag_noop`),
with each task's own time, and once a run on a tiny input whose task times are each task's
fixed cost. It prints wall time, images/s, MB/s and the peak resident memory of each whole
process tree (Beam's workers included), the ratios to TFDS, a projection for full ImageNet
fitted to the measured per-image and per-byte costs, and writes everything to a JSON file so
runs can be compared.

`--layout imagefolder` also extracts the same images into an ImageFolder tree
(train/<wnid>/, val/, test/) and measures it beside the tarballs in the same rounds: the
listing/index step alone (`index_tarballs`, `index_imagefolder`: the work items listed and
indexed as the pipeline does, in a fresh process, timed inside it), and the whole CLI
conversion of the tree as a first run does it (`ours_imagefolder`: every file hashed into
the manifest) and as a re-run finds it (`ours_imagefolder_cached`: the manifest cached).

Shared machines are noisy (TFDS's builder alone varied by 20–30% between runs here), so the
CLI runs and TFDS's builder are repeated in rounds (TFDS, ours, variants; again) and each
figure is the median of its rounds; every round's wall time is kept in the JSON. The DAG
runs and the resize variant (slow, and with no target against TFDS) run once. Every run
finds its input in the page cache and the previous run's writes flushed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from importlib import metadata

import psutil

from benchmarks import realistic_input, scheduler
from benchmarks.measure import Measured, run_measured

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
LAYOUTS = ("tarballs", "imagefolder")
VARIANTS = {
    "passthrough": [],
    "validate": ["--decode_images"],
    "resize": ["--resize=shorter:256"],
    # the classic TF/TPU schema (its own output directory), beside the TFDS schema's
    # cached run: same input, archive checks cached
    "classic": ["--schema=classic"],
    # the same with as many shards as TFDS's rule gives 20k images (1024 + 128 shards of
    # ~17 images each cost ~3 ms a shard more than the examples in them)
    "classic_32shards": ["--schema=classic", "--num_shards=32"],
    "dask": ["--runner=DaskRunner"],  # a local cluster: the same shards, another runner
    # the DirectRunner's other mode (the default is a worker process a core): which is
    # faster decides the default, on the realistic inputs and at full count
    "threads": ["--direct_running_mode=multi_threading"],
}
DEFAULT_VARIANTS = "passthrough,validate,resize,classic,classic_32shards,dask,threads"
FULL_COUNT_VARIANTS = ("threads",)
# The projection's full ImageNet: its images, and the bytes of its archives (train, val,
# the patched test tar's ~13 GB).
FULL_IMAGENET = {"num_images": 1_431_167,
                 "input_bytes": 147_897_477_120 + 6_744_924_160 + 13_000_000_000}
DIRECT = ["--runner=DirectRunner"]
# Where the output goes below DATA_DIR (the classic schema has its own).
TFDS_OUTPUT = ("imagenet2012", "5.1.0")
CLASSIC_OUTPUT = ("imagenet2012_classic", "1.0.0")
TFDS_BUILD = (
    "import sys, tensorflow_datasets as tfds; "
    "b = tfds.builder('imagenet2012', data_dir=sys.argv[2]); "
    "b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=sys.argv[1]))"
)


@dataclasses.dataclass
class Figure:
    name: str
    num_images: int
    input_bytes: int
    wall_s: float
    peak_tree_rss_mib: float
    peak_processes: int
    images_per_s: float = 0.0
    mb_per_s: float = 0.0
    ratio_to_tfds: float | None = None  # our images/s over TFDS's (> 1: faster than TFDS)
    # an extracted layout's images/s over the tarballs' same step (> 1: faster than them)
    ratio_to_tarballs: float | None = None
    wall_s_rounds: list[float] = dataclasses.field(default_factory=list)  # median → wall_s

    def __post_init__(self) -> None:
        self.images_per_s = self.num_images / self.wall_s
        self.mb_per_s = self.input_bytes / 1e6 / self.wall_s


def _checked(name: str, measured: Measured) -> Measured:
    if measured.returncode != 0:
        raise SystemExit(f"{name} failed (exit {measured.returncode}):\n{measured.output_tail}")
    return measured


def _env(**extra: str) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}
    env["PATH"] = os.path.dirname(PY) + os.pathsep + env.get("PATH", "")
    return env


def _archives_bytes(manual_dir: str) -> int:
    return sum(
        os.path.getsize(os.path.join(manual_dir, name))
        for name in os.listdir(manual_dir)
        if name.endswith(".tar")
    )


def _tree_bytes(tree: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for split in ("train", "val", "test")
        for root, _, files in os.walk(os.path.join(tree, split))
        for name in files
    )


def _remove_shards(out: str) -> None:
    for root, _, files in os.walk(out):
        for name in files:
            if ".tfrecord" in name:
                os.remove(os.path.join(root, name))


def _settle(manual_dir: str | None = None) -> None:
    """Writes back what earlier runs left dirty in the page cache, so that no run pays for
    the previous one's writes (TFDS's builder writes GBs through the page cache), and reads the
    input once, so that every run finds it in the page cache (this machine evicts what it
    has not read for a while: a first read of 4.4 GB here took 20 s more than a warm one,
    and whichever run came first would pay it)."""
    os.sync()
    if manual_dir:
        for root, _, files in os.walk(manual_dir):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    while f.read(1 << 23):
                        pass


def run_tfds(manual_dir: str, out: str) -> Measured:
    shutil.rmtree(out, ignore_errors=True)
    _settle(manual_dir)
    return _checked("TFDS builder", run_measured([PY, "-c", TFDS_BUILD, manual_dir, out], _env()))


def run_ours(
    manual_dir: str, out: str, extra: list[str], cached_checks: bool = False
) -> tuple[Measured, int]:
    """One CLI conversion into a fresh output. cached_checks: keep what earlier runs left
    in the archive checks' cache (DATA_DIR/.imagenet2012-work), as a re-run finds it."""
    output = CLASSIC_OUTPUT if "--schema=classic" in extra else TFDS_OUTPUT
    shutil.rmtree(os.path.join(out, output[0]) if cached_checks else out, ignore_errors=True)
    _settle(manual_dir)
    runner = [] if any(a.startswith("--runner=") for a in extra) else DIRECT
    cmd = [
        PY, "-m", "imagenet_beam", "convert", f"--manual_dir={manual_dir}",
        f"--data_dir={out}", *runner, "--verify_checksums=false", *extra,
    ]
    measured = _checked("imagenet_beam convert", run_measured(cmd, _env(), cwd=ROOT))
    with open(os.path.join(out, *output, "lineage.json")) as f:
        lineage = json.load(f)
    return measured, sum(s["num_examples"] for s in lineage["splits"].values())


def run_index(manual_dir: str, layout: str) -> tuple[Measured, float, int]:
    """The listing/index step in a fresh process: (the process, the step's own seconds,
    images indexed)."""
    _settle()
    cmd = [PY, "-m", "benchmarks.index_step", f"--manual_dir={manual_dir}",
           f"--layout={layout}", f"--workers={os.cpu_count() or 1}"]
    measured = _checked(f"index {layout}", run_measured(cmd, _env(), cwd=ROOT))
    result = json.loads(measured.output_tail.strip().splitlines()[-1])
    return measured, result["seconds"], result["num_images"]


def _shard_digests(out: str) -> dict[str, list[str]]:
    with open(os.path.join(out, *TFDS_OUTPUT, "lineage.json")) as f:
        lineage = json.load(f)
    return {s: [x["sha256"] for x in i["shards"]] for s, i in lineage["splits"].items()}


def run_dag(manual_dir: str, out: str, work_dir: str) -> Measured:
    home = os.path.join(work_dir, "airflow-home")
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    env = _env(
        AIRFLOW_HOME=home,
        AIRFLOW__CORE__DAGS_FOLDER=os.path.join(ROOT, "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=os.path.join(ROOT, "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    airflow = os.path.join(os.path.dirname(PY), "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    conf = dag_conf(manual_dir, out)
    cmd = [airflow, "dags", "test", "imagenet2012", "--conf", json.dumps(conf)]
    _settle(manual_dir)
    measured = _checked("airflow dags test", run_measured(cmd, env))
    if "DagRun Finished" not in measured.output_tail or "state=success" not in measured.output_tail:
        raise SystemExit(f"the DAG run did not succeed:\n{measured.output_tail}")
    return measured


# The DAG under a real scheduler: the run after a first one changes this output setting (a
# DALI index beside each TFRecord shard: the conversion runs again, the archive checks are
# cached); the no-op run repeats it (up to date: nothing converted, nothing published).
RERUN_CHANGE = {"tfrecord_index": True}


def dag_conf(manual_dir: str, data_dir: str) -> dict:
    return {
        "manual_dir": manual_dir,
        "data_dir": data_dir,
        "splits": ["train", "validation", "test"],
        "test_patch": None,  # the generated 2012 test tar stands for the patched one
        "verify_checksums": False,
        "wait_timeout_minutes": 1,
        "num_workers": os.cpu_count() or 1,
    }


def _dag_measured(run: scheduler.DagRun) -> Measured:
    return Measured(run.wall_s, run.peak_tree_rss_bytes, 0, 0, "")


def run_dag_scheduled(
    airflow: scheduler.Airflow, manual_dir: str, out: str
) -> tuple[dict[str, Measured], dict[str, dict[str, float]]]:
    """First run (archives hashed), re-run after one output setting changed (checks
    cached), no-op re-run; each run's Measured, and its tasks' durations."""
    shutil.rmtree(out, ignore_errors=True)
    conf = dag_conf(manual_dir, out)
    measured, tasks = {}, {}
    for name, run_conf in (
        ("ours_dag_first", conf),
        ("ours_dag_rerun", {**conf, **RERUN_CHANGE}),
        ("ours_dag_noop", {**conf, **RERUN_CHANGE}),
    ):
        _settle(manual_dir)
        for waited in airflow.wait_idle():
            print(f"before {name}: waited for {waited} to end")
        run = airflow.run(run_conf)
        skipped = [t for t, state in run.states.items() if t.startswith("convert")
                   and state == "skipped"]
        if (name == "ours_dag_noop") != bool(skipped):
            raise SystemExit(f"{name}: the convert tasks were {run.states}")
        measured[name], tasks[name] = _dag_measured(run), run.tasks
    return measured, tasks


def run_dag_fixed_cost(airflow: scheduler.Airflow, work_dir: str) -> dict[str, float]:
    """A run on a tiny generated input (a few images a split): its tasks' durations are
    what each task costs beyond its work."""
    from imagenet_beam import synthetic

    tiny = os.path.join(work_dir, "input-tiny")
    shutil.rmtree(tiny, ignore_errors=True)
    made = synthetic.generate_manual_dir(
        tiny, num_classes=2, train_per_class=2, num_validation=2, num_test=2, num_patched=1,
        test_archives=("patched",),
    )
    out = os.path.join(work_dir, "out-dag-tiny")
    shutil.rmtree(out, ignore_errors=True)
    run = airflow.run(dag_conf(made.manual_dir, out))
    return {"wall_s": round(run.wall_s, 2), **run.tasks}


def start_airflow(work_dir: str) -> scheduler.Airflow:
    home = os.path.join(work_dir, "airflow-scheduler-home")
    shutil.rmtree(home, ignore_errors=True)
    return scheduler.Airflow(home, ROOT)


def _figure(
    name: str, rounds: list[Measured], num_images: int, input_bytes: int,
    walls: list[float] | None = None,
) -> Figure:
    """walls: each round's time when it is not the process's (the index step's own)."""
    walls = walls or [m.wall_s for m in rounds]
    return Figure(
        name, num_images, input_bytes, statistics.median(walls),
        max(m.peak_tree_rss_bytes for m in rounds) / 2**20,
        max(m.peak_processes for m in rounds),
        wall_s_rounds=walls,
    )


ONCE_ONLY = ("resize",)  # variants measured in the first round only
SAME_SHARDS = ("dask", "threads")  # variants that must write the passthrough's bytes


def bench_one(
    manual_dir: str, work_dir: str, variants: list[str], with_dag: bool, repeat: int = 1,
    layout: str = "tarballs", with_scheduler: bool = False, dag_tasks: dict | None = None,
    fixed_cost: bool = False,
) -> list[Figure]:
    """with_scheduler: also the DAG under a real scheduler, after the rounds (started for
    it alone, so that its idle loops cost the other runs nothing; its runs' task durations
    into dag_tasks). A tiny input's run comes first, so that the first measured run does
    not pay what a fresh Airflow's first tasks do (~4-5 s of the task runner's own start);
    with fixed_cost its task durations go in as "fixed_cost"."""
    input_bytes = _archives_bytes(manual_dir)
    out_ours = os.path.join(work_dir, "out-ours")
    measured: dict[str, list[Measured]] = {}
    index_walls: dict[str, list[float]] = {}
    num_images = 0
    tree = None
    if layout == "imagefolder":
        tree = realistic_input.extract_imagefolder(
            manual_dir, os.path.join(work_dir, os.path.basename(manual_dir) + "-imagefolder")
        )
    out_tfds = os.path.join(work_dir, "out-tfds")
    for round_ in range(repeat):
        if tree:
            for name, where in (("tarballs", manual_dir), ("imagefolder", tree)):
                run, seconds, indexed = run_index(where, name)
                if num_images and indexed != num_images:
                    raise SystemExit(f"{name}: {indexed} images indexed, not {num_images}")
                measured.setdefault(f"index_{name}", []).append(run)
                index_walls.setdefault(f"index_{name}", []).append(seconds)
        measured.setdefault("tfds_builder", []).append(run_tfds(manual_dir, out_tfds))
        if tree:  # the tree is a second copy of the input: of TFDS's output keep the metadata
            _remove_shards(out_tfds)
        ours, num_images = run_ours(manual_dir, out_ours, [])
        measured.setdefault("ours_cli", []).append(ours)
        cached, _ = run_ours(manual_dir, out_ours, [], cached_checks=True)
        measured.setdefault("ours_cli_cached", []).append(cached)
        direct_shards = _shard_digests(out_ours)
        for variant in variants:
            if variant == "passthrough" or (round_ and variant in ONCE_ONLY):
                continue
            run, _ = run_ours(manual_dir, out_ours, VARIANTS[variant], cached_checks=True)
            if variant in SAME_SHARDS and _shard_digests(out_ours) != direct_shards:
                raise SystemExit(f"{variant}: not the DirectRunner's shards")
            measured.setdefault(f"ours_cli_{variant}", []).append(run)
        if tree:
            # Into the same data_dir (one output's disk): its first run starts afresh, so
            # the tree is hashed; the cached run keeps the manifest.
            out_tree = out_ours
            from_tarballs = _shard_digests(out_ours)
            run, _ = run_ours(tree, out_tree, [])
            if _shard_digests(out_tree) != from_tarballs:
                raise SystemExit("the tree's shards are not the tarballs': not the same images?")
            measured.setdefault("ours_imagefolder", []).append(run)
            run, _ = run_ours(tree, out_tree, [], cached_checks=True)
            measured.setdefault("ours_imagefolder_cached", []).append(run)
        if with_dag and not round_:
            dag = run_dag(manual_dir, os.path.join(work_dir, "out-dag"), work_dir)
            measured.setdefault("ours_dag_test", []).append(dag)
    if with_scheduler:
        with start_airflow(work_dir) as airflow:
            tiny = run_dag_fixed_cost(airflow, work_dir)
            if fixed_cost and dag_tasks is not None:
                dag_tasks["fixed_cost"] = tiny
            runs, tasks = run_dag_scheduled(
                airflow, manual_dir, os.path.join(work_dir, "out-dag")
            )
        for name, run in runs.items():
            measured[name] = [run]
        if dag_tasks is not None:
            dag_tasks.update(tasks)
    tree_bytes = _tree_bytes(tree) if tree else 0
    figures = [
        _figure(name, runs, num_images,
                tree_bytes if "imagefolder" in name else input_bytes, index_walls.get(name))
        for name, runs in measured.items()
        if name != "tfds_builder"
    ]
    figures.insert(0, _figure("tfds_builder", measured["tfds_builder"], num_images, input_bytes))
    tfds = figures[0]
    by_name = {f.name: f for f in figures}
    for figure in figures:
        figure.ratio_to_tfds = tfds.wall_s / figure.wall_s
        tarballs = by_name.get(TARBALLS_COUNTERPART.get(figure.name, ""))
        if tarballs:
            figure.ratio_to_tarballs = tarballs.wall_s / figure.wall_s
    return figures


# Each extracted-layout figure, and the tarballs' figure of the same step.
TARBALLS_COUNTERPART = {
    "index_imagefolder": "index_tarballs",
    "ours_imagefolder": "ours_cli",
    "ours_imagefolder_cached": "ours_cli_cached",
    "ours_cli_classic": "ours_cli_cached",  # the classic schema beside the TFDS schema
    "ours_cli_classic_32shards": "ours_cli_cached",
}


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "apache_beam": metadata.version("apache-beam"),
        "tensorflow_datasets": metadata.version("tensorflow-datasets"),
        "apache_airflow": metadata.version("apache-airflow"),
    }


def print_table(size_label: str, figures: list[Figure]) -> None:
    print(f"\n{size_label}")
    print(f"{'run':<25}{'wall s':>9}{'images/s':>10}{'MB/s':>8}{'peak MiB':>10}"
          f"{'procs':>7}{'vs TFDS':>9}{'vs tars':>9}  rounds (wall s)")
    for f in figures:
        rounds = " ".join(f"{w:.2f}" for w in f.wall_s_rounds)
        vs_tars = f"{f.ratio_to_tarballs:>8.2f}x" if f.ratio_to_tarballs else f"{'':>9}"
        print(f"{f.name:<25}{f.wall_s:>9.2f}{f.images_per_s:>10.0f}{f.mb_per_s:>8.0f}"
              f"{f.peak_tree_rss_mib:>10.0f}{f.peak_processes:>7}{f.ratio_to_tfds:>8.2f}x"
              f"{vs_tars}  {rounds}")
    if any(f.name.startswith("ours_cli_classic") for f in figures):
        print("ours_cli_classic*: --schema=classic (archive checks cached; _32shards: with "
              "--num_shards=32); 'vs tars' is against ours_cli_cached, the TFDS schema on the "
              "same input")
    if any(f.name.startswith("index_") for f in figures):
        print("index_*: the listing/index step alone, timed inside its process; peak MiB is "
              "that process's")


PROJECTED = ("tfds_builder", "ours_cli", "ours_cli_cached", "ours_dag_first", "ours_dag_rerun")


def projection(runs: list[dict], cores: tuple[int, ...] = (os.cpu_count() or 1, 16)) -> dict:
    """Full ImageNet's wall time for each figure measured on three or more inputs: wall =
    fixed + per_image·images + per_byte·bytes, fitted to the measured runs (the full-count
    rehearsal fixes the per-image cost, the realistic inputs the per-byte cost). On more
    cores the per-image and per-byte work of ours is divided among them (TFDS's builder is
    one process and stays as it is); the disk must then deliver the bytes that fast, which
    is the `needs_gb_per_s` column."""
    import numpy as np

    out: dict = {"inputs": FULL_IMAGENET, "cores": {}}
    points: dict[str, list[tuple[int, int, float]]] = {}
    for run in runs:
        for f in run["figures"]:
            points.setdefault(f["name"], []).append(
                (f["num_images"], f["input_bytes"], f["wall_s"]))
    measured_cores = os.cpu_count() or 1
    for name in PROJECTED:
        rows = points.get(name, [])
        if len(rows) < 3:
            continue
        a = np.array([[1.0, n, b] for n, b, _ in rows])
        y = np.array([w for *_, w in rows])
        (fixed, per_image, per_byte), *_ = np.linalg.lstsq(a, y, rcond=None)
        fixed, per_image, per_byte = max(fixed, 0.0), max(per_image, 0.0), max(per_byte, 0.0)
        work = per_image * FULL_IMAGENET["num_images"] + per_byte * FULL_IMAGENET["input_bytes"]
        for cores_ in cores:
            scale = 1 if name == "tfds_builder" else measured_cores / cores_
            wall = fixed + work * scale
            out["cores"].setdefault(str(cores_), {})[name] = {
                "wall_s": round(wall, 1),
                "needs_gb_per_s": round(FULL_IMAGENET["input_bytes"] / 1e9 / wall, 2),
            }
        out.setdefault("fits", {})[name] = {
            "fixed_s": round(fixed, 2), "per_image_us": round(per_image * 1e6, 2),
            "per_gb_s": round(per_byte * 1e9, 2),
        }
    for by_name in out["cores"].values():
        tfds = by_name.get("tfds_builder", {}).get("wall_s")
        for figure in by_name.values():
            figure["ratio_to_tfds"] = round(tfds / figure["wall_s"], 2) if tfds else None
    return out


def print_projection(proj: dict) -> None:
    if not proj.get("fits"):
        return
    print("\nprojected for full ImageNet (1,431,167 images, 167.6 GB of archives), "
          "from the fits below")
    for cores, by_name in proj["cores"].items():
        for name, f in by_name.items():
            print(f"  {cores:>3} cores  {name:<18}{f['wall_s'] / 60:>8.1f} min"
                  f"{f['ratio_to_tfds'] or 0:>8.2f}x   disk {f['needs_gb_per_s']:.2f} GB/s")
    for name, fit in proj["fits"].items():
        print(f"  fit {name:<18} {fit['fixed_s']:.1f} s + {fit['per_image_us']:.1f} µs/image "
              f"+ {fit['per_gb_s']:.1f} s/GB")


def print_dag_tasks(label: str, tasks: dict) -> None:
    print(f"\nDAG under the scheduler ({label}): each task's own seconds "
          "(fixed_cost: a few images a split)")
    for run, durations in tasks.items():
        shown = " ".join(f"{t}={d:.1f}" for t, d in durations.items())
        print(f"  {run}: {shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=None)
    parser.add_argument(
        "--sizes", default="20000,40000", help="Comma-separated image counts to run."
    )
    parser.add_argument("--manual_dir", default=None, help="Benchmark on these archives.")
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "benchmarks", "work"))
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--skip_dag", action="store_true", help="No DAG run at all.")
    parser.add_argument(
        "--skip_dag_test", action="store_true",
        help="The DAG under the scheduler only, not also with `airflow dags test`.",
    )
    parser.add_argument(
        "--repeat", type=int, default=3,
        help="Rounds of TFDS and CLI runs; each figure is the median (default 3).",
    )
    parser.add_argument(
        "--full_count", action=argparse.BooleanOptionalAction, default=True,
        help="Also the full-count rehearsal: ImageNet's 1,431,167 members in its archives' "
        "shapes, as tiny JPEGs (~2.1 GB), TFDS's builder and ours, the DAG included.",
    )
    parser.add_argument(
        "--full_count_repeat", type=int, default=1,
        help="Rounds at full count (TFDS's builder takes ~5 minutes a round; default 1).",
    )
    parser.add_argument(
        "--layout", choices=LAYOUTS, default="tarballs",
        help="imagefolder: also the same images extracted as an ImageFolder tree, indexed "
        "and converted beside the tarballs (default: tarballs only).",
    )
    parser.add_argument("--out", default=None, help="JSON file (default: WORK_DIR/results.json)")
    args = parser.parse_args(argv)

    if args.repeat < 1:
        parser.error("--repeat: give 1 or more rounds")
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {sorted(VARIANTS)}")
    os.makedirs(args.work_dir, exist_ok=True)
    results = {"machine": machine(), "repeat": args.repeat, "layout": args.layout, "runs": []}
    # (label, manual dir, variants, rounds)
    inputs: list[tuple[str, str, list[str], int]] = []
    if args.manual_dir:
        inputs.append((f"input {args.manual_dir}", args.manual_dir, variants, args.repeat))
    else:
        sizes = [args.num_images] if args.num_images else [int(n) for n in args.sizes.split(",")]
        for size in sizes:
            made = realistic_input.generate(
                os.path.join(args.work_dir, f"input-{size}"), num_images=size
            )
            inputs.append((made.describe(), made.manual_dir, variants, args.repeat))
        if args.full_count:
            made = realistic_input.generate_full_count(os.path.join(args.work_dir, "input-full"))
            full_variants = [v for v in variants if v in FULL_COUNT_VARIANTS]
            inputs.append((f"full count: {made.describe()}", made.manual_dir, full_variants,
                           args.full_count_repeat))
    for index, (label, manual_dir, run_variants, rounds) in enumerate(inputs):
        dag_tasks: dict = {}
        figures = bench_one(
            manual_dir, args.work_dir, run_variants,
            with_dag=not args.skip_dag and index == 0 and not args.skip_dag_test,
            repeat=rounds, layout=args.layout, with_scheduler=not args.skip_dag,
            dag_tasks=dag_tasks, fixed_cost=index == 0,
        )
        print_table(label, figures)
        if dag_tasks:
            print_dag_tasks(label, dag_tasks)
        sys.stdout.flush()
        results["runs"].append(
            {"input": label, "manual_dir": manual_dir, "rounds": rounds,
             "figures": [dataclasses.asdict(f) for f in figures], "dag_tasks": dag_tasks}
        )
    results["projection"] = projection(results["runs"])
    print_projection(results["projection"])
    out = args.out or os.path.join(args.work_dir, "results.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
