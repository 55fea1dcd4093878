"""How far a conversion is, told as it goes: a line per finished shard and every 30 s.

    train: 412/1024 shards, 515,204/1,281,167 images (40%), 3,510 images/s, about 6 min left

The launcher (the command line, or `beam_main` under Airflow's Beam operator) watches the
staging work directory through `storage`, so it works alike on every runner and on gs://:
the plan step writes each split's totals (`StagingLayout.planned_file`), and each written
shard its result file. Nothing of this runs in the pipeline, so the writers are not slowed.
What a runner's own UI shows (Dataflow's job page) are the Beam Metrics counters
(`pipeline.METRICS_NAMESPACE`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence

from imagenet_beam import storage
from imagenet_beam.layout import StagingLayout

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30.0  # a line at least this often, shards finished or not
LOCAL_POLL_SECONDS = 1.0  # how often the work directory is looked at
REMOTE_POLL_SECONDS = 5.0  # on gs://: one listing of the results each time

_RESULT_NAME = re.compile(r"([a-z]+)-(\d{5})\.json")


def _duration(seconds: float, exact: bool = False) -> str:
    """6 s, 6 min, 1 h 12 min; exact: 6 min 5 s."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        if exact:
            return f"{minutes} min {secs} s" if secs else f"{minutes} min"
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@dataclasses.dataclass
class SplitProgress:
    """One split's progress as the launcher has seen it."""

    split: str
    started: float
    num_shards: int | None = None  # known once the split is planned
    num_images: int | None = None
    planned_at: float | None = None
    done: dict[int, int] = dataclasses.field(default_factory=dict)  # shard → images it took
    finished_at: float | None = None

    @property
    def images_done(self) -> int:
        return sum(self.done.values())

    @property
    def complete(self) -> bool:
        return self.num_shards is not None and len(self.done) == self.num_shards

    def line(self, now: float) -> str:
        if self.num_shards is None or self.num_images is None or self.planned_at is None:
            return (f"{self.split}: indexing the archives and planning shards "
                    f"({_duration(now - self.started)} so far)")
        done, total = self.images_done, self.num_images
        percent = 100 if self.complete else min(99, done * 100 // max(total, 1))
        text = (f"{self.split}: {len(self.done)}/{self.num_shards} shards, "
                f"{done:,}/{total:,} images ({percent}%)")
        end = self.finished_at if self.complete and self.finished_at is not None else now
        elapsed = end - self.planned_at
        if done and elapsed > 0:
            rate = done / elapsed
            text += f", {rate:,.0f} images/s"
            if self.complete:
                text += f", written in {_duration(end - self.planned_at, exact=True)}"
            else:
                text += f", about {_duration(max(1.0, (total - done) / rate))} left"
        return text


class ProgressReporter:
    """A thread that logs the splits' progress until stopped (see the module's doc)."""

    def __init__(
        self,
        staged: StagingLayout,
        splits: Sequence[str],
        heartbeat: float = HEARTBEAT_SECONDS,
        poll: float | None = None,
    ):
        self._staged = staged
        self._heartbeat = heartbeat
        remote = storage.is_remote(staged.staging_dir)
        self._poll = poll or (REMOTE_POLL_SECONDS if remote else LOCAL_POLL_SECONDS)
        now = time.time()
        self._splits = {split: SplitProgress(split, now) for split in splits}
        self._last_line = now
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="progress", daemon=True)
        self._thread.start()

    def stop(self, completed: bool = True) -> None:
        """Stops the thread; completed: one last look, so the final lines are logged."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        if completed:
            self._look_safely()
            now = time.time()
            for progress in self._splits.values():
                if not progress.complete:  # a recorded data error follows
                    log.info(progress.line(now))

    def _watch(self) -> None:
        while not self._stopping.wait(self._poll):
            self._look_safely()

    def _look_safely(self) -> None:
        try:
            self._look()
        except Exception as e:  # a file a moment away, a lost connection: try again later
            log.debug("progress: could not read %s: %s", self._staged.work_dir, e)

    def _look(self) -> None:
        now = time.time()
        for progress in self._splits.values():
            if progress.num_shards is None and storage.exists(
                self._staged.planned_file(progress.split)
            ):
                path = self._staged.planned_file(progress.split)
                totals = json.loads(storage.read_bytes(path))
                progress.num_shards, progress.num_images = (
                    totals["num_shards"], totals["num_images"])
                # When writing began, also when the plan is only seen at the end.
                progress.planned_at = min(now, max(progress.started, storage.last_updated(path)))
                self._log(progress, now)
        writing = {
            split: p for split, p in self._splits.items()
            if p.planned_at is not None and not p.complete
        }
        if writing:
            self._read_new_results(writing)
        if time.time() - self._last_line >= self._heartbeat:
            now = time.time()
            for progress in self._splits.values():
                if not progress.complete:
                    self._log(progress, now)

    def _read_new_results(self, writing: dict[str, SplitProgress]) -> None:
        from imagenet_beam.shards import ShardResult

        for path in storage.list_files(self._staged.results_dir):
            match = _RESULT_NAME.fullmatch(storage.basename(path))
            if not match or match.group(1) not in writing:
                continue
            progress, index = writing[match.group(1)], int(match.group(2))
            if index in progress.done:
                continue
            result = ShardResult.from_json(storage.read_bytes(path).decode("utf-8"))
            progress.done[index] = result.num_examples + len(result.skipped)
            now = time.time()
            if progress.complete:
                progress.finished_at = now
            self._log(progress, now)

    def _log(self, progress: SplitProgress, now: float) -> None:
        log.info(progress.line(now))
        self._last_line = now


@contextlib.contextmanager
def reporting(
    staged: StagingLayout, splits: Sequence[str], enabled: bool = True
) -> Iterator[ProgressReporter | None]:
    """Logs the splits' progress while the block runs (the Beam job); the final lines
    once it ends without an exception."""
    if not enabled:
        yield None
        return
    reporter = ProgressReporter(staged, splits)
    reporter.start()
    try:
        yield reporter
    except BaseException:
        reporter.stop(completed=False)
        raise
    reporter.stop(completed=True)
