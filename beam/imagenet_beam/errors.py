"""Errors in the data or the environment, which a retry cannot mend.

Met inside the Beam job, they are recorded rather than raised
(`step_errors.RecordedErrors`), and the command line prints the message alone. Standard
library only.
"""

from __future__ import annotations

import errno

# The command line's exit status for bad input or environment (argparse's, too); the DAG's
# convert task fails without a retry on it.
DATA_ERROR_EXIT = 2


class DataError(ValueError):
    """Bad input or environment, found while converting; the message says what to do.
    no_space: the output's device is full (the run's end adds how much it needs)."""

    def __init__(self, message: str, *, no_space: bool = False):
        super().__init__(message)
        self.no_space = no_space


def from_os_error(e: OSError, path: str) -> DataError | None:
    """The environment errors a user can mend, as DataErrors; None for any other. Names
    the file the error is about when it says (else `path`)."""
    if e.errno == errno.ENOSPC:  # a write to an open file names none: the output's
        where = f" while writing {e.filename}" if isinstance(e.filename, str) else ""
        return DataError(
            f"no space left on the output's device{where}: the output needs about as much "
            "space as the archives take; free that much (or choose another data_dir) and "
            "run again",
            no_space=True,
        )
    path = e.filename if isinstance(e.filename, str) else path
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DataError(
            f"cannot write {path} ({e.strerror}): choose a data_dir this user can write to"
        )
    return None


# The command line's exit status when the runner failed in a way a retry may mend (a lost
# worker, an unreachable scheduler); the DAG's convert task retries it.
RUNNER_ERROR_EXIT = 1


class RunnerError(RuntimeError):
    """The runner could not do the work (its cluster lost workers or cannot be reached);
    the message says what happened and what to do. Nothing is published."""
