"""`--runner=DaskRunner`: Beam's DaskRunner, made to spread the work over the cluster.

Beam's DaskRunner turns each step into Dask Bag operations, but runs `Reshuffle` as a
no-op: every element stays in the partition it was made in. Our pipeline starts from one
element per split, so on Beam's runner every shard of a split would be written one after
another by one task on one worker. Here `Reshuffle` deals its elements round-robin into
partitions, one Dask task each, which the scheduler spreads over the workers.

Without `--dask_client_address` (or `--dask_scheduler_file`) the job starts a local
cluster of worker processes on this machine's cores, and closes it at the end; Beam's
runner would leave it (and its client) to the interpreter's exit.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import dask
import dask.bag
import distributed
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PTransformOverride
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask import transform_evaluator
from distributed.comm import CommClosedError

from imagenet_beam.errors import RunnerError

log = logging.getLogger(__name__)
# Importing distributed set its loggers to INFO: a line for every worker, client and
# connection that comes and goes. What matters (lost workers, failed tasks) is a warning.
logging.getLogger("distributed").setLevel(logging.WARNING)

PARTITIONS_PER_THREAD = 4  # tasks per worker thread at each spread: even out uneven shards
PARTITIONS_WITHOUT_WORKERS = 32  # a scheduler with no workers yet (an adaptive cluster)
MAX_PARTITIONS = 1024  # as many as full ImageNet's largest split has shards
MERGED_INPUTS = 16  # partitions dealt from, at most: each spread task reads every one
CONNECT_SECONDS = 20  # the scheduler's answer to a first connection, unless told otherwise


class DaskClusterOptions(PipelineOptions):
    """How many local worker processes the DaskRunner starts without a scheduler address."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--dask_local_workers", type=int, default=None,
            help="DaskRunner without --dask_client_address: the local cluster's worker "
            "processes (one thread each). Default: this machine's cores.",
        )


# --- Reshuffle on Dask: deal the elements out ------------------------------------------


def _deal(partition, num_parts: int, start: int) -> list[list]:
    """One partition's elements into num_parts lists, round-robin from list `start`."""
    dealt: list[list] = [[] for _ in range(num_parts)]
    for position, element in enumerate(partition):
        dealt[(start + position) % num_parts].append(element)
    return dealt


def _gather(part: int, *dealt: list[list]) -> list:
    return [element for lists in dealt for element in lists[part]]


def spread(bag: dask.bag.Bag, num_parts: int) -> dask.bag.Bag:
    """The bag's elements dealt into `num_parts` partitions (their order is not kept)."""
    if bag.npartitions > MERGED_INPUTS:
        bag = bag.repartition(npartitions=MERGED_INPUTS)
    dealt = [
        dask.delayed(_deal)(part, num_parts, start * num_parts // bag.npartitions)
        for start, part in enumerate(bag.to_delayed(optimize_graph=False))
    ]
    return dask.bag.from_delayed([dask.delayed(_gather)(i, *dealt) for i in range(num_parts)])


def cluster_partitions(client: distributed.Client) -> int:
    """How many partitions a spread makes: a few per worker thread of the cluster now."""
    threads = sum(client.nthreads().values())
    if not threads:
        return PARTITIONS_WITHOUT_WORKERS
    return max(1, min(MAX_PARTITIONS, PARTITIONS_PER_THREAD * threads))


class _Spread(beam.PTransform):
    """What a Reshuffle becomes on Dask: a primitive the translation below knows."""

    def __init__(self, num_parts: int | None):
        super().__init__()
        self.num_parts = num_parts

    def expand(self, pcoll):
        return beam.pvalue.PCollection.from_(pcoll)


class _SpreadOp(transform_evaluator.DaskBagOp):
    def apply(self, input_bag, side_inputs=None):
        num_parts = self.transform.num_parts or cluster_partitions(distributed.get_client())
        return spread(input_bag, num_parts)


transform_evaluator.TRANSLATIONS[_Spread] = _SpreadOp  # Beam's table: transform → Bag op


class _SpreadReshuffles(PTransformOverride):
    def __init__(self, num_parts: int | None):
        self._num_parts = num_parts

    def matches(self, applied_ptransform) -> bool:
        return type(applied_ptransform.transform) is beam.Reshuffle

    def get_replacement_transform_for_applied_ptransform(self, applied_ptransform):
        return _Spread(self._num_parts)


# --- the runner ------------------------------------------------------------------------


@dataclasses.dataclass
class DaskRunnerResult(beam_dask.DaskRunnerResult):
    """Beam's result, which also closes the client (and the local cluster) once the job
    has ended, and says in one line why it failed when the cluster did."""

    cluster: Any = None
    address: str | None = None

    def wait_until_finish(self, duration=None) -> str:
        try:
            return super().wait_until_finish(duration)
        except distributed.KilledWorker as e:
            times = e.allowed_failures + 1
            raise RunnerError(
                f"the Dask cluster {self.address} lost the worker running one of the job's "
                f"tasks {times} time{'s' if times > 1 else ''} (the last: "
                f"{e.last_worker.address}), more than its scheduler allows "
                "(distributed.scheduler.allowed-failures): killed, or out of memory (the "
                "workers' logs say which). Nothing was published; give the workers more "
                "memory (or fewer threads each), then run again"
            ) from None
        except (OSError, distributed.TimeoutError) as e:
            if not isinstance(e, CommClosedError) and self.client.status == "running":
                raise  # a task's own error, raised again here
            raise RunnerError(
                f"lost the Dask scheduler {self.address} while converting ({e}); nothing was "
                "published: run again once the cluster is back"
            ) from None
        finally:
            if duration is None:
                self.close()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


class DaskRunner(beam_dask.DaskRunner):
    """Beam's DaskRunner, with Reshuffle spreading the work and a local cluster that is
    closed at the end (see the module's doc)."""

    def run_pipeline(self, pipeline, options):
        dask_options = options.view_as(beam_dask.DaskOptions)
        cluster = None
        if not dask_options.address and not dask_options.scheduler_file:
            cluster = local_cluster(options.view_as(DaskClusterOptions).dask_local_workers)
            dask_options.address = cluster.scheduler_address
        if dask_options.timeout is None:
            dask_options.timeout = CONNECT_SECONDS
        address = dask_options.address or dask_options.scheduler_file
        pipeline.replace_all([_SpreadReshuffles(dask_options.npartitions)])
        try:
            result = super().run_pipeline(pipeline, options)
        except BaseException as e:
            if cluster is not None:
                cluster.close()
            if isinstance(e, (OSError, distributed.TimeoutError)):
                raise RunnerError(unreachable(address, e)) from None
            raise
        return DaskRunnerResult(result.client, result.futures, cluster, address)


def local_cluster(workers: int | None = None) -> distributed.LocalCluster:
    """Worker processes on this machine, one thread each: the per-image work is Python
    holding the GIL, so threads of one process would leave cores idle. No dashboard (a
    second run would find its port taken)."""
    workers = workers or os.cpu_count() or 1
    log.info("starting a local Dask cluster of %d worker process(es)", workers)
    return distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
        worker_dashboard_address=None,
    )


def unreachable(address: str | None, error: BaseException) -> str:
    return (
        f"cannot reach the Dask scheduler {address} ({error}): start it (`dask scheduler`, "
        "or your cluster's own way) or give its address with --dask_client_address, "
        "then run again"
    )


# --- before any work: the cluster sees the folders -------------------------------------


def check_cluster(options: PipelineOptions, folders: Sequence[str]) -> str | None:
    """A line on the running cluster the options name (None for a local one), refused as a
    RunnerError when the scheduler does not answer, or as a ValueError when a worker does
    not see one of the local `folders` (every worker reads and writes at the same paths as
    this launcher: a shared file system, or gs://) or a Dask option is out of range."""
    dask_options = options.view_as(beam_dask.DaskOptions)
    for flag, value in (("--dask_local_workers",
                         options.view_as(DaskClusterOptions).dask_local_workers),
                        ("--dask_npartitions", dask_options.npartitions)):
        if value is not None and value < 1:
            raise ValueError(f"{flag}={value}: give a number from 1 up")
    address = dask_options.address or dask_options.scheduler_file
    if not address:
        return None
    kwargs = {"scheduler_file": dask_options.scheduler_file} if not dask_options.address else {
        "address": dask_options.address}
    try:
        client = distributed.Client(timeout=dask_options.timeout or CONNECT_SECONDS, **kwargs)
    except (OSError, distributed.TimeoutError, ValueError) as e:
        raise RunnerError(unreachable(address, e)) from None
    try:
        workers = client.nthreads()
        for folder in folders:
            blind = sorted(w for w, seen in client.run(os.path.isdir, folder).items() if not seen)
            if blind:
                raise ValueError(
                    f"the Dask worker(s) {', '.join(blind)} of {address} do not see {folder}: "
                    "every worker must reach manual_dir and data_dir at the same paths as "
                    "this machine (a shared file system, or gs://)"
                )
    finally:
        client.close()
    return (f"the Dask cluster {address}: {len(workers)} worker(s), "
            f"{sum(workers.values())} thread(s)")
