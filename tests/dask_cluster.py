"""A real dask.distributed cluster on localhost for the DaskRunner's tests.

`dask scheduler` and each `dask worker` are separate OS processes, started as a user
starts them, each worker with its own memory limit (its nanny restarts it beyond that).
Each is its own process group, so a test can kill one worker whole (nanny and worker
process) as a lost machine would be lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

DASK = os.path.join(os.path.dirname(sys.executable), "dask")
WORKER_MEMORY = "1.5GiB"
START_SECONDS = 120
BEAM_TASK = "apply_dofn_to_bundle"  # what Beam's DaskRunner names a bundle of a DoFn


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalhostCluster:
    def __init__(self, log_dir: str, env: dict | None = None):
        self.log_dir = log_dir
        self.env = {**os.environ, **(env or {})}
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.scheduler: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self._started = 0

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(os.path.join(self.log_dir, f"{name}.log"), "ab")  # noqa: SIM115 - the process's
        try:
            return subprocess.Popen(
                [DASK, *args], stdout=log, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,
            )
        finally:
            log.close()

    def start(self, workers: int = 2) -> LocalhostCluster:
        port = self.address.rsplit(":", 1)[1]
        self.scheduler = self._start(
            "scheduler", ["scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"]
        )
        for _ in range(workers):
            self.start_worker()
        self.wait_for_workers()
        return self

    def start_worker(self) -> str:
        self._started += 1
        name = f"worker-{self._started}"
        self.workers[name] = self._start(name, [
            "worker", self.address, "--name", name, "--host", "127.0.0.1", "--nthreads", "1",
            "--memory-limit", WORKER_MEMORY, "--no-dashboard",
        ])
        return name

    def client(self):
        import distributed

        return distributed.Client(self.address, timeout=START_SECONDS)

    def worker_names(self) -> set[str]:
        with self.client() as client:
            return {w["name"] for w in client.scheduler_info()["workers"].values()}

    def wait_for_workers(self) -> None:
        """Until the scheduler lists exactly the workers that are running."""
        deadline = time.monotonic() + START_SECONDS
        while True:
            for name, proc in self.workers.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: {self.log(name)}")
            try:
                if self.worker_names() == set(self.workers):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers did not join: {self.log('scheduler')}")
            time.sleep(0.2)

    def kill_worker(self, name: str) -> None:
        """SIGKILL to the worker's nanny and worker process both: a lost machine."""
        proc = self.workers.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def replace_lost_workers(self, count: int = 2) -> None:
        """Back to `count` workers after a test killed some."""
        while len(self.workers) < count:
            self.start_worker()
        self.wait_for_workers()

    @contextlib.contextmanager
    def bundles_per_worker(self) -> Iterator[Counter]:
        """worker name → how many bundles of a DoFn it ran during the block (filled in at
        its end)."""
        import distributed

        ran: Counter = Counter()
        with self.client() as client:
            names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
            with distributed.get_task_stream(client=client) as stream:
                yield ran
            ran.update(
                names.get(task["worker"], task["worker"]) for task in stream.data
                if BEAM_TASK in str(task["key"])
            )

    def log(self, name: str) -> str:
        with open(os.path.join(self.log_dir, f"{name}.log"), errors="replace") as f:
            return f.read()[-3000:]

    def stop(self) -> None:
        procs = [p for p in (*self.workers.values(), self.scheduler) if p is not None]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):  # the whole group is gone
                    os.killpg(proc.pid, sig)
            try:
                for proc in procs:
                    proc.wait(timeout=30)
                return
            except subprocess.TimeoutExpired:
                continue
