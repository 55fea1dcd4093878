"""Our conversion against TFDS's own `imagenet2012` builder, on the same input, in one run.

    python -m benchmarks.run [--num_images 20000 | --manual_dir DIR] [--sizes 10000,40000]
                             [--variants passthrough,validate,resize,classic,dask]
                             [--skip_dag]
                             [--repeat 3] [--layout tarballs|imagefolder]

For every input size it times, each in a fresh process: TFDS's builder (`tfds build`'s
code path); our CLI as a first run does it (`ours_cli`: the archive checks hash and walk
every archive, then the conversion), and again with the archive checks cached as a re-run
finds them (`ours_cli_cached`: the conversion alone), also in the requested variants (`dask`:
the DaskRunner on a local cluster of one worker process per core, started and closed by the
run, its shards checked to be the DirectRunner's); and
once the whole Airflow DAG (`airflow dags test`). It prints wall time, images/s, MB/s and the peak
resident memory of each whole process tree (Beam's workers included), the ratios to TFDS,
and writes everything to a JSON file so runs can be compared.

`--layout imagefolder` also extracts the same images into an ImageFolder tree
(train/<wnid>/, val/, test/) and measures it beside the tarballs in the same rounds: the
listing/index step alone (`index_tarballs`, `index_imagefolder`: the work items listed and
indexed as the pipeline does, in a fresh process, timed inside it), and the whole CLI
conversion of the tree as a first run does it (`ours_imagefolder`: every file hashed into
the manifest) and as a re-run finds it (`ours_imagefolder_cached`: the manifest cached).

Shared machines are noisy (TFDS's builder alone varied by 20–30% between runs here), so the
CLI runs and TFDS's builder are repeated in rounds (TFDS, ours, variants; again) and each
figure is the median of its rounds; every round's wall time is kept in the JSON. The DAG
and the resize variant (slow, and with no target against TFDS) run in the first round only.
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

from benchmarks import realistic_input
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
}
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


def _settle() -> None:
    """Writes back what earlier runs left dirty in the page cache, so that no run pays for
    the previous one's writes (the disk writes ~430 MB/s; a run writes GBs)."""
    os.sync()


def run_tfds(manual_dir: str, out: str) -> Measured:
    shutil.rmtree(out, ignore_errors=True)
    _settle()
    return _checked("TFDS builder", run_measured([PY, "-c", TFDS_BUILD, manual_dir, out], _env()))


def run_ours(
    manual_dir: str, out: str, extra: list[str], cached_checks: bool = False
) -> tuple[Measured, int]:
    """One CLI conversion into a fresh output. cached_checks: keep what earlier runs left
    in the archive checks' cache (DATA_DIR/.imagenet2012-work), as a re-run finds it."""
    output = CLASSIC_OUTPUT if "--schema=classic" in extra else TFDS_OUTPUT
    shutil.rmtree(os.path.join(out, output[0]) if cached_checks else out, ignore_errors=True)
    _settle()
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
    conf = {
        "manual_dir": manual_dir,
        "data_dir": out,
        "splits": ["train", "validation", "test"],
        "test_patch": None,  # the generated 2012 test tar stands for the patched one
        "verify_checksums": False,
        "wait_timeout_minutes": 1,
        "num_workers": os.cpu_count() or 1,
    }
    cmd = [airflow, "dags", "test", "imagenet2012", "--conf", json.dumps(conf)]
    _settle()
    measured = _checked("airflow dags test", run_measured(cmd, env))
    if "DagRun Finished" not in measured.output_tail or "state=success" not in measured.output_tail:
        raise SystemExit(f"the DAG run did not succeed:\n{measured.output_tail}")
    return measured


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
SAME_SHARDS = ("dask",)  # variants that must write the passthrough's bytes


def bench_one(
    manual_dir: str, work_dir: str, variants: list[str], with_dag: bool, repeat: int = 1,
    layout: str = "tarballs",
) -> list[Figure]:
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
            measured.setdefault("ours_dag", []).append(dag)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num_images", type=int, default=20000)
    parser.add_argument("--sizes", default=None, help="Comma-separated image counts to run.")
    parser.add_argument("--manual_dir", default=None, help="Benchmark on these archives.")
    parser.add_argument("--work_dir", default=os.path.join(ROOT, "benchmarks", "work"))
    parser.add_argument(
        "--variants", default="passthrough,validate,resize,classic,classic_32shards,dask"
    )
    parser.add_argument("--skip_dag", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=3,
        help="Rounds of TFDS and CLI runs; each figure is the median (default 3).",
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
    if args.manual_dir:
        inputs = [(f"input {args.manual_dir}", args.manual_dir)]
    else:
        sizes = [int(s) for s in (args.sizes or str(args.num_images)).split(",")]
        inputs = []
        for size in sizes:
            made = realistic_input.generate(
                os.path.join(args.work_dir, f"input-{size}"), num_images=size
            )
            inputs.append((made.describe(), made.manual_dir))
    for index, (label, manual_dir) in enumerate(inputs):
        figures = bench_one(
            manual_dir, args.work_dir, variants,
            with_dag=not args.skip_dag and index == 0, repeat=args.repeat, layout=args.layout,
        )
        print_table(label, figures)
        sys.stdout.flush()
        results["runs"].append(
            {"input": label, "manual_dir": manual_dir,
             "figures": [dataclasses.asdict(f) for f in figures]}
        )
    out = args.out or os.path.join(args.work_dir, "results.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
