"""One writer per version at a time: a lease on `DATA_DIR/imagenet2012/5.1.0`.

Everything from clearing the staging directory to the end of publishing is done under the
lease, so two conversions into one data_dir cannot mix their shards, clear each other's
staging or publish each other's splits. A second conversion fails at once, naming the
holder.

The lease is a small JSON record beside the version directory (`.5.1.0.lease`): who holds
it (run id, process and host), and until when.

- Local and POSIX shared file systems: the record's file is locked with `flock`. A command
  line run keeps the lock for its whole life, so its lease dies with its process, however it
  ends. A DAG run's tasks are separate processes one after another: its record stays valid
  between them until it expires (`ttl`), each of its tasks renews it while it runs, and the
  lock only guards each read-and-write of the record.
- GCS: the record is an object written with generation preconditions: created only where
  none exists (`if_generation_match=0`), renewed and released only by the generation its
  holder wrote, taken over only once expired. Nothing dies with a process there, so every
  holder's record expires unless renewed.

Renewal runs on a thread (every third of `ttl`); a holder that finds its record gone or
taken over stops renewing and `check` says so before publishing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
from typing import Any

from imagenet_beam import storage
from imagenet_beam.errors import DataError, from_os_error

# How long a record stays valid unrenewed. A command line run renews it while it lives (and
# locally the lock, not the expiry, says it is alive); a DAG run's record must outlast the
# scheduling gaps between its tasks.
CLI_TTL_SECONDS = float(os.environ.get("IMAGENET2012_CLI_LEASE_SECONDS", 120))
DAG_TTL_SECONDS = float(os.environ.get("IMAGENET2012_LEASE_SECONDS", 15 * 60))
# A Dataflow job runs on after its launcher (and the DAG's deferred task) is gone, renewing
# nothing: its run's record covers a long job. The run's last task releases it earlier.
DATAFLOW_TTL_SECONDS = 24 * 3600.0
# How long to wait for the lock guarding a record's read-and-write (held only for that).
_LOCK_WAIT_SECONDS = 10.0


class LeaseHeld(DataError):
    """Another conversion holds the version's lease."""


def _held_error(record: dict[str, Any], path: str) -> LeaseHeld:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.get("taken", 0)))
    holder = (f"run {record.get('run_id', '?')} ({record.get('owner', 'an unknown process')}, "
              f"since {when}")
    if record.get("process_bound") and not storage.is_remote(path):
        holder += ")"
        what_to_do = "wait for it to end (or stop it), then run again"
    else:
        left = max(0, int(record.get("expires", 0) - time.time()))
        holder += f"; valid {left} s more unless renewed)"
        what_to_do = (
            "wait for that run to finish or fail (its lease is then released, or expires), "
            f"then run again; if that run is gone for good, delete {path}"
        )
    return LeaseHeld(
        f"another conversion is writing this version: {path} is held by {holder}. One "
        f"conversion per data_dir at a time: {what_to_do}"
    )


def _owner() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _keeps_out(record: dict[str, Any] | None, run_id: str, *, locked: bool) -> bool:
    """Whether `record` keeps `run_id` out: it names another run and has not expired.
    locked: read holding the local lock, so a process-bound holder is gone (it kept the
    lock for its life)."""
    if not record or record.get("run_id") == run_id:
        return False
    if locked and record.get("process_bound"):
        return False
    return record.get("expires", 0) > time.time()


class Lease:
    """The lease of one run on one version (`path`: its record, `OutputLayout.lease_file`).
    `process_bound`: a command line run (held for this process's life); else a DAG run's
    task (held by run id across the run's tasks)."""

    def __init__(self, path: str, run_id: str, *, process_bound: bool,
                 ttl: float | None = None):
        self.path = path
        self.run_id = run_id
        self.process_bound = process_bound
        self.ttl = ttl if ttl is not None else (CLI_TTL_SECONDS if process_bound
                                                else DAG_TTL_SECONDS)
        self.lost: str | None = None  # why the lease is no longer ours, once it is not
        self._fd: int | None = None  # local: the locked file while process-bound
        self._generation: int | None = None  # GCS: the record's generation we wrote
        self._taken: float | None = None  # when the run took it (kept across its tasks)
        # The folder the lease made for itself (local), removed with it when empty at the
        # end, by whichever task of a DAG run releases it.
        self._made_dir: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict[str, Any]:
        now = time.time()
        return {
            "run_id": self.run_id,
            "owner": _owner(),
            "process_bound": self.process_bound,
            "taken": self._taken or now,
            "expires": now + self.ttl,
            "made_dir": self._made_dir,
        }

    def _adopt(self, record: dict[str, Any] | None) -> None:
        """Carries on what this run's record says (an earlier task of the same run wrote
        it): when the lease was taken, and the folder it made."""
        if record and record.get("run_id") == self.run_id:
            self._taken = record.get("taken") or self._taken
            self._made_dir = record.get("made_dir") or self._made_dir

    # --- local: flock ---------------------------------------------------------------------

    def _open_locked(self, wait: float) -> int:
        """The record's file, open and locked. A released lease's file is removed (under
        its lock), so a lock won on a file that is no longer at the path is tried again."""
        import fcntl

        deadline = time.monotonic() + wait
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                # Locked by a process-bound holder for its life (its record says so): no
                # use waiting. Else a DAG run's task reads and writes its record: a moment.
                record = _read_fd(fd)
                os.close(fd)
                if (record and record.get("process_bound")) or time.monotonic() >= deadline:
                    raise _held_error(record or {"run_id": "?"}, self.path) from None
                time.sleep(0.05)
                continue
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            self._close(fd)  # removed by its releaser meanwhile: open the new one

    def _open(self) -> int:
        directory = os.path.dirname(self.path) or "."
        try:  # the first thing a run writes: an output place it cannot write ends here
            if not os.path.isdir(directory):
                os.makedirs(directory, exist_ok=True)
                self._made_dir = directory
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            error = from_os_error(e, self.path)
            if error is None:
                raise
            raise error from None

    def _remove_locked(self, fd: int) -> None:
        """Removes the released record's file (and the folder the lease made for it, if
        nothing else is in it), then lets go of the lock."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if self._made_dir:
            with contextlib.suppress(OSError):
                os.rmdir(self._made_dir)  # only when empty
        self._close(fd)

    def _close(self, fd: int) -> None:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def _acquire_local(self) -> None:
        fd = self._open_locked(_LOCK_WAIT_SECONDS)
        try:
            record = _read_fd(fd)
            if _keeps_out(record, self.run_id, locked=True):
                raise _held_error(record, self.path)
            self._adopt(record)
            _write_fd(fd, self._record())
        except BaseException:
            self._close(fd)
            raise
        if self.process_bound:
            self._fd = fd
        else:
            self._close(fd)

    def _renew_local(self) -> None:
        if self._fd is not None:
            _write_fd(self._fd, self._record())
            return
        fd = self._open_locked(_LOCK_WAIT_SECONDS)
        try:
            record = _read_fd(fd)
            if not record or record.get("run_id") != self.run_id:
                self.lost = f"{self.path} no longer names this run"
                return
            _write_fd(fd, self._record())
        finally:
            self._close(fd)

    def _release_local(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._remove_locked(fd)
            return
        fd = self._open_locked(_LOCK_WAIT_SECONDS)
        record = _read_fd(fd)
        if not record or record.get("run_id") == self.run_id:
            self._adopt(record)
            self._remove_locked(fd)
        else:
            self._close(fd)

    # --- GCS: generation preconditions -----------------------------------------------------

    def _blob(self):
        return storage.gcs_blob(self.path)

    def _write_gcs(self, generation: int) -> bool:
        """Writes our record where the object's generation is `generation` (0: none);
        False when another writer got there first."""
        from google.api_core.exceptions import PreconditionFailed

        blob = self._blob()
        try:
            blob.upload_from_string(
                json.dumps(self._record()), content_type="application/json",
                if_generation_match=generation,
            )
        except PreconditionFailed:
            return False
        self._generation = blob.generation
        return True

    def _current_gcs(self) -> tuple[dict[str, Any] | None, int]:
        """(the record, its generation); (None, 0) when there is no object."""
        from google.api_core.exceptions import NotFound

        blob = self._blob()
        try:  # a newer record read with an older generation: the write that follows fails
            blob = blob.bucket.get_blob(blob.name)
            if blob is None:
                return None, 0
            generation = blob.generation  # (a download resets it from its headers)
            data = blob.download_as_bytes()
        except NotFound:
            return None, 0
        try:
            return json.loads(data) if data.strip() else None, generation
        except ValueError:
            return None, generation

    def _acquire_gcs(self) -> None:
        for _ in range(20):  # each pass loses only to a writer that got in between
            if self._write_gcs(0):
                return
            record, generation = self._current_gcs()  # (None, 0): deleted meanwhile
            if _keeps_out(record, self.run_id, locked=False):
                raise _held_error(record, self.path)
            self._adopt(record)
            if generation and self._write_gcs(generation):
                return
        raise LeaseHeld(f"could not take {self.path}: other conversions keep writing it")

    def _renew_gcs(self) -> None:
        if self._generation is None or not self._write_gcs(self._generation):
            self.lost = f"{self.path} was taken over by another run (it had expired)"

    def _release_gcs(self) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        generation = self._generation
        if generation is None:  # a later task of a DAG run: release the run's own record
            record, generation = self._current_gcs()
            if not record or record.get("run_id") != self.run_id:
                return
        with contextlib.suppress(NotFound, PreconditionFailed):
            self._blob().delete(if_generation_match=generation)
        self._generation = None

    # --- the lease -------------------------------------------------------------------------

    @property
    def _remote(self) -> bool:
        return storage.is_remote(self.path)

    def acquire(self) -> Lease:
        """Takes the lease (or, for a run that holds it already, renews it); LeaseHeld
        names the holder when another run has it. Starts renewing it."""
        if self._remote:
            self._acquire_gcs()
        else:
            self._acquire_local()
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, daemon=True,
                                        name="imagenet-lease")
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self._renew_gcs() if self._remote else self._renew_local()
            except Exception as e:  # noqa: BLE001 - said by check(), before publishing
                self.lost = f"could not renew {self.path}: {e}"
            if self.lost:
                return

    def check(self) -> None:
        """Raises LeaseHeld when the lease stopped being ours (before publishing)."""
        if self.lost:
            raise LeaseHeld(
                f"this run lost its lease on the version ({self.lost}); nothing was "
                "published: run again once the other conversion has finished"
            )

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def release(self) -> None:
        """Ends the lease (the run has published, or failed): others may write now."""
        self.stop_renewing()
        if self._remote:
            self._release_gcs()
        else:
            self._release_local()

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_fd(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    try:
        return json.loads(data) if data.strip() else None
    except ValueError:
        return None


def _write_fd(fd: int, record: dict[str, Any]) -> None:
    data = json.dumps(record, sort_keys=True).encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


