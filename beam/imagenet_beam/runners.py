"""The Beam runners the conversion runs on, by the name `--runner` takes: one table.

Standard library only, so the DAG builds its runner choice from it at parse time. A name
that is none of these, none of Beam's own runners and no importable runner class is
refused before any work, with these listed.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib


@dataclasses.dataclass(frozen=True)
class Runner:
    name: str  # what --runner and the DAG's runner param take
    class_path: str  # the PipelineRunner Beam creates for it
    where: str  # where the work runs, for messages
    needs: str | None = None  # the package extra it needs (pip install 'imagenet-beam[...]')
    also: tuple[str, ...] = ()  # other class names that mean the same runner


DIRECT = Runner(
    "DirectRunner", "apache_beam.runners.direct.direct_runner.DirectRunner",
    "this machine's cores",
)
DATAFLOW = Runner(
    "DataflowRunner", "apache_beam.runners.dataflow.dataflow_runner.DataflowRunner",
    "Google Cloud Dataflow; manual_dir and data_dir on gs://",
)
DASK = Runner(
    "DaskRunner", "imagenet_beam.dask_runner.DaskRunner",
    "the Dask cluster at --dask_client_address, or without it a local one on this "
    "machine's cores",
    needs="dask", also=("apache_beam.runners.dask.dask_runner.DaskRunner",),
)
RUNNERS = (DIRECT, DATAFLOW, DASK)
NAMES = tuple(r.name for r in RUNNERS)
DEFAULT = DIRECT


class UnknownRunner(ValueError):
    """A --runner value that names no runner; the message lists the supported ones."""


def find(name: str) -> Runner | None:
    """The runner `name` means: its name in any case, with or without "Runner"
    (Beam's own rule), or its class's full name."""
    wanted = name.strip().lower()
    for runner in RUNNERS:
        names = {runner.name.lower(), runner.name.lower().removesuffix("runner"),
                 runner.class_path.lower(), *(a.lower() for a in runner.also)}
        if wanted in names:
            return runner
    return None


def supported_text() -> str:
    """`DirectRunner (where), DataflowRunner (where) or DaskRunner (where)`."""
    named = [f"{r.name} ({r.where})" for r in RUNNERS]
    return f"{', '.join(named[:-1])} or {named[-1]}"


def check(name: str, beam_names: tuple[str, ...] = ()) -> Runner | None:
    """The supported runner `name` means, or None for another one Beam knows (one of
    `beam_names`, or an importable class's full name); UnknownRunner for anything else."""
    runner = find(name)
    if runner is not None:
        if runner.needs:
            _check_installed(runner)
        return runner
    known = {n.lower() for n in beam_names}
    if name.lower() in known or f"{name.lower()}runner" in known:  # Beam's own rule
        return None
    if "." in name:
        module, _, attribute = name.rpartition(".")
        try:
            getattr(importlib.import_module(module), attribute)
            return None
        except (ImportError, AttributeError, ValueError) as e:
            raise UnknownRunner(
                f"--runner={name}: cannot import that runner class ({e}). Choose "
                f"{supported_text()}"
            ) from None
    close = difflib.get_close_matches(name, NAMES, n=1, cutoff=0.8)
    hint = f" Did you mean {close[0]}?" if close else ""
    raise UnknownRunner(
        f"--runner={name} is not a runner.{hint} Choose {supported_text()}; or another of "
        "Beam's runners by its full class name"
    )


def _check_installed(runner: Runner) -> None:
    try:
        importlib.import_module(runner.class_path.rpartition(".")[0])
    except ImportError as e:
        raise UnknownRunner(
            f"--runner={runner.name} needs packages that are not installed ({e}): "
            f"pip install 'imagenet-beam[{runner.needs}]' here and on every worker"
        ) from None
