"""A step's data errors, recorded in the staging directory instead of raised.

The Beam job's steps record them (`RecordedErrors`); whoever ends the job (`run.stage`, or
`publish` after a Dataflow job) reads them back (`recorded_errors`). No Beam import: the
DAG's publish task reads them without paying for it.
"""

from __future__ import annotations

import contextlib
import json

from imagenet_beam import plan, storage
from imagenet_beam.errors import DataError, from_os_error
from imagenet_beam.layout import StagingLayout


def as_data_error(exc: BaseException, path: str, labels: bool = False) -> DataError | None:
    """What is wrong with the input or the output's place, as a DataError; None for
    anything else (a bug keeps its traceback). labels: a ValueError is a member the layout
    cannot label (an unknown class, a misnamed validation image)."""
    from imagenet_beam.sources.tar import ArchiveError

    if isinstance(exc, DataError):
        return exc
    if isinstance(exc, (ArchiveError, plan.PlanError, UnicodeError)):
        return DataError(str(exc))
    if labels and isinstance(exc, ValueError):
        text = str(exc)
        return DataError(text if path in text else f"{path}: {text}")
    if isinstance(exc, OSError):
        return from_os_error(exc, path)
    return None


class RecordedErrors:
    """A step's data error, written to the staging work dir instead of raised.

    Raised inside a Beam worker, the error would reach the user as the runner's traceback
    (the SDK worker prints it to stderr itself, in any running mode); recorded, the job
    ends, `run.stage` (or `publish`, after a Dataflow job) reports the message alone and
    the command exits with DATA_ERROR_EXIT. Each step's whole work is guarded, its own
    work files included, so no space left while writing them is reported the same way.
    Steps look for a recorded error before they start, so a failed run stops early.
    """

    def __init__(self, staging: StagingLayout, name: str, path: str, labels: bool = False):
        self._staging, self._name, self._path, self._labels = staging, name, path, labels
        self.failed = False

    def __enter__(self) -> RecordedErrors:
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        error = as_data_error(exc, self._path, self._labels) if exc is not None else None
        if error is None:
            return False
        record = json.dumps({"message": str(error), "no_space": error.no_space}).encode()
        try:
            storage.write_bytes(self._staging.error_file(self._name), record)
        except OSError:  # the disk is full: give back the space held for this
            with contextlib.suppress(Exception):  # (another step may have done so already)
                storage.delete_files([self._staging.space_reserve])
            storage.write_bytes(self._staging.error_file(self._name), record)
        self.failed = True
        return True


def _error_files(staging: StagingLayout, splits) -> list[str]:
    return [
        path for path in storage.list_files(staging.errors_dir)
        if any(storage.basename(path).startswith(f"{split}-") for split in splits)
    ]


def failed_already(staging: StagingLayout, split: str) -> bool:
    """Whether a step of this split's job met bad input (other splits' jobs, which share
    the staging directory under the DAG, go on)."""
    return bool(_error_files(staging, [split]))


def recorded_errors(staging: StagingLayout, splits) -> list[DataError]:
    """The data errors the splits' steps recorded, in a stable order."""
    errors = []
    for path in _error_files(staging, splits):
        record = json.loads(storage.read_bytes(path))
        errors.append(DataError(record["message"], no_space=record.get("no_space", False)))
    return errors
