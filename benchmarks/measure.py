"""Wall time and peak resident memory of a command's whole process tree."""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import time

import psutil

SAMPLE_SECONDS = 0.05


@dataclasses.dataclass
class Measured:
    wall_s: float
    peak_tree_rss_bytes: int
    peak_processes: int
    returncode: int
    output_tail: str


def _executable(proc: psutil.Process) -> str | None:
    try:
        return proc.exe()
    except psutil.Error:
        return None


def tree_rss(root: psutil.Process) -> tuple[int, int]:
    """The summed resident memory of `root` and all its descendants, and the number of
    them that run root's own program (the Python processes doing the work: a worker process
    a core, a Dask worker; not a library's momentary helper such as ctypes' `ldconfig -p`,
    which a 50 ms sample otherwise catches now and then)."""
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = 0
    program = _executable(root)
    workers = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
        workers += _executable(proc) == program
    return total, workers


def run_measured(cmd: list[str], env: dict | None = None, cwd: str | None = None) -> Measured:
    """Runs cmd, sampling the summed RSS of it and all its descendants every 50 ms."""
    started = time.monotonic()
    with open("/dev/null", "rb") as devnull:
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdin=devnull, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    root = psutil.Process(proc.pid)
    peak = {"rss": 0, "procs": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss, count = tree_rss(root)
            peak["rss"] = max(peak["rss"], rss)
            peak["procs"] = max(peak["procs"], count)
            done.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.stdout.read().decode("utf-8", "replace")
    proc.wait()
    wall = time.monotonic() - started
    done.set()
    sampler.join()
    return Measured(wall, peak["rss"], peak["procs"], proc.returncode, output[-4000:])
