"""Errors in the data or the environment, which a retry cannot mend.

Raised inside Beam workers too: the runner wraps a worker's exception in its own, so the
message carries a prefix by which the command line finds it again and prints it alone.
Standard library only.
"""

from __future__ import annotations

import errno
import re

ERROR_PREFIX = "imagenet_beam error: "
# The command line's exit status for bad input or environment (argparse's, too); the DAG's
# convert task fails without a retry on it.
DATA_ERROR_EXIT = 2

_MESSAGE = re.compile(re.escape(ERROR_PREFIX) + r"(.*?)(?:\\n|\n|['\"]\)|$)", re.S)


class DataError(ValueError):
    """Bad input or environment, found while converting; the message says what to do."""

    def __init__(self, message: str):
        super().__init__(message if message.startswith(ERROR_PREFIX) else ERROR_PREFIX + message)

    @property
    def message(self) -> str:
        return str(self)[len(ERROR_PREFIX):]


def message_in(exc: BaseException) -> str | None:
    """Our own message, when an exception (or a runner's wrapping of one) carries it."""
    match = _MESSAGE.search(str(exc))
    return match.group(1).strip() if match else None


def from_os_error(e: OSError, path: str) -> DataError | None:
    """The environment errors a user can mend, as DataErrors; None for any other."""
    if e.errno == errno.ENOSPC:
        return DataError(
            f"no space left on the device while writing {path}: the output needs about as "
            "much space as the archives take; free that much (or choose another data_dir) "
            "and run again"
        )
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DataError(
            f"cannot write {path} ({e.strerror}): choose a data_dir this user can write to"
        )
    return None
