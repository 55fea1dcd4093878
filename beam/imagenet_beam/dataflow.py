"""Launching on Dataflow: the package the workers install is built from a private copy.

With `--setup_file`, Beam's stager builds an sdist of the package (`setup.py sdist`) in the
directory of setup.py: setuptools writes `*.egg-info/` and a release tree there and deletes
the tree afterwards. The DAG launches one job per split at the same time from the same
`beam/` directory, and concurrent builds there fail or lose files (seen here: 1 of 4
parallel builds failed with "No such file or directory"). A read-only source fails too. So
each launch builds from its own temporary copy; the copy is removed when the launch ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence

SETUP_FILE_FLAG = "--setup_file"
# Build leftovers and caches: never part of what the workers install.
_NOT_COPIED = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".git", ".pytest_cache"
)


def _setup_file_arg(argv: Sequence[str]) -> tuple[int, int, str] | None:
    """(index of the flag, index of its value, value) of the last --setup_file, if any."""
    found = None
    for i, arg in enumerate(argv):
        if arg.startswith(SETUP_FILE_FLAG + "="):
            found = (i, i, arg.split("=", 1)[1])
        elif arg == SETUP_FILE_FLAG and i + 1 < len(argv):
            found = (i, i + 1, argv[i + 1])
    return found


@contextlib.contextmanager
def private_setup_file(argv: Sequence[str]) -> Iterator[list[str]]:
    """argv with --setup_file pointing into a private copy of its directory (unchanged
    when there is no --setup_file)."""
    argv = list(argv)
    found = _setup_file_arg(argv)
    if found is None or not found[2]:
        yield argv
        return
    flag_at, value_at, setup_file = found
    source = os.path.dirname(os.path.abspath(setup_file))
    with tempfile.TemporaryDirectory(prefix="imagenet_beam-package-") as scratch:
        copy = os.path.join(scratch, os.path.basename(source) or "package")
        shutil.copytree(source, copy, ignore=_NOT_COPIED)
        private = os.path.join(copy, os.path.basename(setup_file))
        del argv[flag_at : value_at + 1]
        argv.insert(flag_at, f"{SETUP_FILE_FLAG}={private}")
        yield argv
