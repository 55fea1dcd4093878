"""Layouts that come as gzip-compressed tars: Hugging Face's imagenet-1k archives and the
Kaggle copy's one .tar.gz, unpacked once into uncompressed tars that are read by offset.

A gzip stream cannot be seeked, so a shard cannot read its images out of a .tar.gz where
they lie. Before the Beam job (`run.unpack_archives`), each .tar.gz is streamed once —
several at a time, in threads, as zlib inflates without the GIL — and, per split it holds,
its images are written into an uncompressed tar in the run work dir under their TFDS file
names (nothing else: strays, annotations and tables stay out). The copy is written under a
temporary name and renamed when complete; its report (JSON beside it, written last) names
the archive's identity, lists the strays left out, and points at chunk files that list
each image's offset and size in the copy, TFDS file name and the wnid the layout gives it.
A re-run with the same archive finds the report and reads nothing. The Beam job indexes one
chunk per work item and reads images from the copy by offset, like any tar.

What it costs: the copy takes about the archives' size again on the data_dir's file
system (JPEGs do not compress), kept between runs; a first run reads each archive twice
(the archive check hashes it, the unpack copies it), a re-run neither.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import gzip
import hashlib
import json
import logging
import posixpath
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

from imagenet_beam import dataset, storage
from imagenet_beam.layout import OutputLayout
from imagenet_beam.sources.archive_checks import CheckedTarInfo, tar_end_problem
from imagenet_beam.sources.base import MemberRef, Source, SplitInput, WorkItem
from imagenet_beam.sources.tar import ArchiveError
from imagenet_beam.sources.tree import (
    COUNTED,
    STRAY_FOLDERS,
    LabelMismatch,
    TreeCheck,
    count_problem,
    is_stray,
    layout_label,
)

log = logging.getLogger(__name__)

PACKED_SUFFIX = ".tar.gz"
REPORT_SUFFIX = ".json"
CHUNK_MEMBERS = 50_000  # images a chunk file (one indexing work item) lists
_REPORT_VERSION = 1
_TAR_BUFSIZE = 1 << 20
_COPY_FORMAT = tarfile.PAX_FORMAT
_PARALLEL = 4
_PROGRESS_EVERY = 10 << 30


@functools.cache
def _classes() -> dict[str, int]:
    return dataset.class_index()


def is_wnid(name: str) -> bool:
    return name in _classes()


@dataclasses.dataclass(frozen=True)
class Image:
    """A member of a packed archive that is an image of `split`."""

    split: str
    file_name: str  # as the tarballs name it
    wnid: str | None  # the layout's own label (train: the class; validation: if it has one)


@dataclasses.dataclass(frozen=True)
class Stray:
    """A member that is no image of the dataset, listed in lineage as `shown`."""

    split: str
    shown: str


def stray_name(path: str) -> str | None:
    """How a stray member is listed (a stray folder as the folder), or None for no stray."""
    parts = path.split("/")
    for i, part in enumerate(parts[:-1]):
        if part in STRAY_FOLDERS or part.startswith("."):
            return "/".join(parts[: i + 1]) + "/"
    return path if is_stray(parts[-1]) else None


def member_path(name: str) -> str:
    """A member's name without `./` and doubled slashes."""
    path = posixpath.normpath(name)
    return "" if path == "." else path.lstrip("/")


class PackedSource(Source, abc.ABC):
    """What a layout of .tar.gz archives says about them; unpacking, indexing and reading
    are shared. A configured source (`configured`) knows where the copies are."""

    unpacked_dir: str | None = None
    trust_layout_labels: bool = False

    def configure_packed(self, copy: PackedSource, settings: Any) -> PackedSource:
        copy.trust_layout_labels = bool(getattr(settings, "trust_layout_labels", False))
        data_dir = getattr(settings, "data_dir", None)
        copy.unpacked_dir = OutputLayout(data_dir).unpacked_dir if data_dir else None
        return copy

    # --- what the layout says --------------------------------------------------------

    @abc.abstractmethod
    def packed_archives(self, split_input: SplitInput) -> list[str]:
        """The .tar.gz archives a split is read from ([] when it is not packed)."""

    @abc.abstractmethod
    def archives_of(self, split: str, path: str) -> list[str]:
        """The same, from the split's `SplitInput.archive` alone (what a Beam job has)."""

    @abc.abstractmethod
    def classify(self, archive: str, name: str) -> Image | Stray | None:
        """What a regular member is: an image, a stray, or nothing of ours (None).
        Raises ArchiveError for an image that cannot be part of the dataset."""

    def keep(self, archive: str, name: str) -> bool:
        """Whether a member that is no image is needed whole (a table of labels)."""
        return False

    def resolve(self, archive: str, split: str, rows: list[list], kept: dict[str, bytes]) -> None:
        """Fills in the wnids the layout gives `rows` ([offset, size, file_name, wnid])
        from the members kept; called once the whole archive was read."""

    def defers(self, split: str) -> bool:
        """Whether `resolve` needs a split's rows (they are then held until the end)."""
        return False

    def where_packed_label(self, archive: str, file_name: str, wnid: str) -> str:
        return archive

    # --- the Beam job's side ----------------------------------------------------------

    def _report(self, archive: str, split: str) -> dict:
        if self.unpacked_dir is None:
            raise ArchiveError(f"{archive}: no work directory to find its unpacked copy in")
        report = read_report(copy_path(self.unpacked_dir, archive, split))
        if report is None:
            raise ArchiveError(
                f"{archive} has not been unpacked for the {split} split (run the "
                "unpack step first, run.unpack_archives, or convert with the command line)"
            )
        if report["identity"] != storage.identity(archive):
            raise ArchiveError(
                f"{archive} changed after it was unpacked: run the conversion again"
            )
        return report

    def packed_work_items(self, split: str, path: str) -> Iterator[WorkItem]:
        """One work item per chunk of each archive's unpacked images."""
        for archive in self.archives_of(split, path):
            for chunk in self._report(archive, split)["chunks"]:
                yield split, path, {"packed": chunk}

    def packed_index(self, item: WorkItem) -> list[MemberRef]:
        split, _, detail = item
        chunk = json.loads(storage.read_bytes(detail["packed"]))
        archive, copy = chunk["archive"], chunk["copy"]
        refs = []
        for offset, size, file_name, wnid in chunk["rows"]:
            label, _ = self.packed_label(archive, split, file_name, wnid)
            refs.append(MemberRef(split, copy, offset, size, file_name, label))
        return refs

    def packed_label(self, archive: str, split: str, file_name: str, wnid: str | None):
        where = self.where_packed_label(archive, file_name, wnid) if wnid else ""
        try:
            return layout_label(split, file_name, wnid, where, self.trust_layout_labels)
        except LabelMismatch:
            raise
        except ValueError as e:
            raise ArchiveError(f"{archive}: {e}") from None

    def origin(self, ref: MemberRef) -> str:
        """The user's .tar.gz, not our copy."""
        return _archive_of(ref.archive)

    def work_items(self, split: str, path: str) -> Iterator[WorkItem]:
        return self.packed_work_items(split, path)

    def index(self, item: WorkItem) -> list[MemberRef]:
        return self.packed_index(item)


# --- the copies and their reports ----------------------------------------------------------


def copy_path(unpacked_dir: str, archive: str, split: str) -> str:
    """Where a split's images of `archive` are unpacked to: named by the archive's path."""
    key = hashlib.sha1(archive.encode("utf-8")).hexdigest()[:16]
    stem = storage.basename(archive)
    stem = stem[: -len(PACKED_SUFFIX)] if stem.endswith(PACKED_SUFFIX) else stem
    return storage.join(unpacked_dir, f"{stem}-{key}-{split}.tar")


def read_report(copy: str) -> dict | None:
    """The report beside a copy, or None (missing, torn, another version)."""
    try:
        if not storage.exists(copy + REPORT_SUFFIX):
            return None
        report = json.loads(storage.read_bytes(copy + REPORT_SUFFIX))
    except (OSError, ValueError):
        return None
    return report if report.get("version") == _REPORT_VERSION else None


@functools.lru_cache(maxsize=64)
def _archive_of(copy: str) -> str:
    report = read_report(copy)
    return report["archive"] if report else copy


def _reusable(copy: str, archive: str, identity: dict) -> dict | None:
    """The stored report when the copy is complete and made from exactly this archive."""
    report = read_report(copy)
    if report is None or report.get("archive") != archive or report.get("identity") != identity:
        return None
    if not storage.exists(copy) or storage.identity(copy) != report.get("copy_identity"):
        return None
    return report


def _member_bytes(tar: tarfile.TarFile, info: tarfile.TarInfo, archive: str) -> bytes:
    """A member's bytes, whole (images are small); a short read is a truncated archive."""
    reader = tar.extractfile(info)
    data = reader.read() if reader is not None else b""
    if len(data) != info.size:
        raise _incomplete(archive, f"it ends inside member {info.name!r}")
    return data


def _incomplete(archive: str, reason: object) -> ArchiveError:
    return ArchiveError(
        f"{archive} is not a complete .tar.gz archive ({reason}): the download is probably "
        "incomplete or corrupt; download it again"
    )


class _SplitCopy:
    """One split's copy being written: the uncompressed tar, its rows in chunk files."""

    def __init__(self, source: PackedSource, unpacked_dir: str, archive: str, split: str):
        self.source, self.archive, self.split = source, archive, split
        self.copy = copy_path(unpacked_dir, archive, split)
        self.partial = storage.join(unpacked_dir, f".{storage.basename(self.copy)}.partial")
        self.rows: list[list] = []
        self.chunks: list[str] = []
        self.strays: set[str] = set()
        self.names: set[str] = set()
        self.count = 0
        self.size = 0
        self.done = False
        self.offset = 0
        self._out = storage.open_write(self.partial)

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.offset += len(data)

    def add(self, image: Image, info: tarfile.TarInfo, data: bytes) -> None:
        """Appends one image, its header written by tarfile, its bytes as they are (tarfile's
        own stream writer copies its buffer on every write: 4× slower)."""
        if image.file_name in self.names:
            raise ArchiveError(
                f"{self.archive} holds the {self.split} image {image.file_name} twice: is "
                "this the archive as it was published? Download it again"
            )
        self.names.add(image.file_name)
        header = tarfile.TarInfo(image.file_name)
        header.size, header.mtime, header.mode = len(data), info.mtime, 0o644
        self._write(header.tobuf(_COPY_FORMAT, "utf-8", "surrogateescape"))
        offset = self.offset
        self._write(data)
        if len(data) % tarfile.BLOCKSIZE:
            self._write(bytes(tarfile.BLOCKSIZE - len(data) % tarfile.BLOCKSIZE))
        self.rows.append([offset, len(data), image.file_name, image.wnid])
        self.count += 1
        self.size += info.size
        if len(self.rows) >= CHUNK_MEMBERS and not self.source.defers(self.split):
            self._flush()

    def _flush(self) -> None:
        for start in range(0, len(self.rows), CHUNK_MEMBERS):
            path = f"{self.copy}.{len(self.chunks):05d}{REPORT_SUFFIX}"
            record = {"archive": self.archive, "copy": self.copy, "split": self.split,
                      "rows": self.rows[start : start + CHUNK_MEMBERS]}
            storage.write_bytes(path, json.dumps(record, separators=(",", ":")).encode())
            self.chunks.append(path)
        self.rows = []

    def finish(self, identity: dict, kept: dict[str, bytes]) -> dict:
        self._write(bytes(2 * tarfile.BLOCKSIZE))  # the end-of-archive marker
        self._out.close()
        if self.count == 0:
            message = f"{self.archive} holds no {self.split} images"
            raise ArchiveError(
                f"{message}: is it the right archive? Or leave {self.split} out of --splits"
            )
        self.source.resolve(self.archive, self.split, self.rows, kept)
        self._flush()
        storage.rename_file(self.partial, self.copy)
        report = {
            "version": _REPORT_VERSION,
            "archive": self.archive,
            "identity": identity,
            "split": self.split,
            "layout": self.source.name,
            "copy": self.copy,
            "copy_identity": storage.identity(self.copy),
            "num_members": self.count,
            "size": self.size,
            "ignored": sorted(self.strays),
            "chunks": self.chunks,
        }
        storage.write_bytes(self.copy + REPORT_SUFFIX,
                            json.dumps(report, indent=1, sort_keys=True).encode())
        self.done = True
        return report

    def abandon(self) -> None:
        if self.done:
            return
        try:
            self._out.close()
        except Exception:  # noqa: BLE001 - a broken stream is being thrown away
            pass
        leftovers = [p for p in [self.partial, *self.chunks] if storage.exists(p)]
        storage.delete_files(leftovers)


class _Progress:
    def __init__(self, raw: BinaryIO, archive: str):
        self._raw, self._archive, self.read_bytes, self._next = raw, archive, 0, _PROGRESS_EVERY

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.read_bytes += len(data)
        if self.read_bytes >= self._next:
            log.info("%s: %.1f GiB unpacked", self._archive, self.read_bytes / (1 << 30))
            self._next += _PROGRESS_EVERY
        return data


def unpack_archive(
    source: PackedSource, archive: str, splits: Sequence[str], unpacked_dir: str
) -> dict[str, dict]:
    """Streams `archive` once, writing each of `splits`' images into its copy; split →
    its report. Nothing is left behind when it fails (ArchiveError)."""
    identity = storage.identity(archive)
    storage.makedirs(unpacked_dir)
    for split in splits:  # an old copy no longer has a valid report
        old = copy_path(unpacked_dir, archive, split) + REPORT_SUFFIX
        if storage.exists(old):
            storage.delete_files([old])
    copies = {split: _SplitCopy(source, unpacked_dir, archive, split) for split in splits}
    kept: dict[str, bytes] = {}
    log.info("unpacking %s (%s) for %s", archive, f"{identity['size']:,} bytes", ", ".join(splits))
    try:
        with storage.open_read(archive) as raw:
            progress = _Progress(raw, archive)
            try:
                with (
                    gzip.GzipFile(fileobj=progress, mode="rb") as gz,  # type: ignore[arg-type]
                    # tarfile's default buffer: its stream reader copies the buffer per read
                    tarfile.open(fileobj=gz, mode="r|", tarinfo=CheckedTarInfo) as tar,
                ):
                    while (info := tar.next()) is not None:
                        tar.members.clear()
                        if not info.isreg():
                            continue
                        name = member_path(info.name)
                        what = source.classify(archive, name)
                        if isinstance(what, Stray) and what.split in copies:
                            copies[what.split].strays.add(what.shown)
                        elif isinstance(what, Image) and what.split in copies:
                            copies[what.split].add(what, info, _member_bytes(tar, info, archive))
                        elif what is None and source.keep(archive, name):
                            kept[name] = _member_bytes(tar, info, archive)
                    problem = tar_end_problem(tar)
                    while gz.read(_TAR_BUFSIZE):  # to gzip's end: its CRC and length
                        pass
            except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
                raise _incomplete(archive, e) from None
            if problem:
                raise _incomplete(archive, problem)
        if storage.identity(archive) != identity:
            raise ArchiveError(
                f"{archive} changed while it was unpacked; wait until it is fully written, "
                "then run again"
            )
        reports = {split: copy.finish(identity, kept) for split, copy in copies.items()}
    except BaseException:
        for copy in copies.values():
            copy.abandon()
        raise
    log.info("unpacked %s: %s", archive, ", ".join(
        f"{r['num_members']:,} {s} images" for s, r in reports.items()))
    return reports


# --- the run's step ---------------------------------------------------------------------


def _wanted(
    settings: Any, split_inputs: Iterable[SplitInput]
) -> tuple[dict[str, tuple[PackedSource, list[str]]], dict[str, PackedSource], str]:
    """(archive → its source and the splits read from it, split → its packed source, the
    copies' folder)."""
    from imagenet_beam import sources

    wanted: dict[str, tuple[PackedSource, list[str]]] = {}
    by_split: dict[str, PackedSource] = {}
    for split_input in split_inputs:
        source = sources.get(split_input.layout).configured(settings)
        if not isinstance(source, PackedSource):
            continue
        for archive in source.packed_archives(split_input):
            wanted.setdefault(archive, (source, []))[1].append(split_input.split)
            by_split[split_input.split] = source
    return wanted, by_split, OutputLayout(settings.data_dir).unpacked_dir


def _stale(wanted, unpacked_dir) -> dict[str, tuple[PackedSource, list[str], dict]]:
    """archive → (source, splits whose copy must be made, reports of the others)."""
    todo = {}
    for archive, (source, splits) in wanted.items():
        identity = storage.identity(archive)
        reports = {s: _reusable(copy_path(unpacked_dir, archive, s), archive, identity)
                   for s in splits}
        todo[archive] = (source, [s for s, r in reports.items() if r is None],
                         {s: dict(r, reused=True) for s, r in reports.items() if r})
    return todo


def unpack_size(settings: Any, split_inputs: Iterable[SplitInput]) -> int:
    """The bytes the copies still to be made will take: about their archives' size."""
    wanted, _, unpacked_dir = _wanted(settings, split_inputs)
    if not wanted:
        return 0
    todo = _stale(wanted, unpacked_dir)
    return sum(storage.size(archive) for archive, (_, splits, _) in todo.items() if splits)


def unpack_inputs(settings: Any, split_inputs: Sequence[SplitInput]) -> list[TreeCheck]:
    """Unpacks every .tar.gz the splits read that has no up-to-date copy (one pass each,
    several at once), then checks each packed split as an extracted one is checked —
    labels, strays, counts when `verify_checksums` — and returns one row per split for
    lineage and the fingerprint. Raises ArchiveError or LabelMismatch."""
    wanted, by_split, unpacked_dir = _wanted(settings, split_inputs)
    if not wanted:
        return []
    todo = _stale(wanted, unpacked_dir)
    jobs = [(a, source, splits) for a, (source, splits, _) in todo.items() if splits]
    for archive, (_, _, done) in todo.items():
        for split, report in done.items():
            log.info("%s: unpacked before for %s (%s), not read again", archive, split,
                     report["copy"])
    reports: dict[tuple[str, str], dict] = {
        (a, s): r for a, (_, _, done) in todo.items() for s, r in done.items()
    }
    if jobs:
        with ThreadPoolExecutor(min(_PARALLEL, len(jobs))) as pool:
            futures = [pool.submit(unpack_archive, source, a, splits, unpacked_dir)
                       for a, source, splits in jobs]
            errors = []
            for (archive, _, _), future in zip(jobs, futures, strict=True):
                try:
                    for split, report in future.result().items():
                        reports[(archive, split)] = dict(report, reused=False)
                except ArchiveError as e:
                    errors.append(str(e))
        if errors:
            raise ArchiveError("\n".join(errors))
    rows = []
    for split_input in split_inputs:
        source = by_split.get(split_input.split)
        if source is not None:
            mine = [reports[(a, split_input.split)] for a in source.packed_archives(split_input)]
            rows.append(_check(source, split_input, mine, settings))
    return rows


class _Counted(tuple):
    """What `count_problem` looks at of an image: its label."""

    @property
    def label(self) -> int:
        return self[0]


def _check(
    source: PackedSource, split_input: SplitInput, reports: list[dict], settings: Any
) -> TreeCheck:
    split = split_input.split
    labels, notes = [], []
    digest = hashlib.sha256()
    for report in reports:
        digest.update(f"{report['archive']}\n".encode())
        for chunk in report["chunks"]:
            for offset, size, file_name, wnid in json.loads(storage.read_bytes(chunk))["rows"]:
                label, note = source.packed_label(report["archive"], split, file_name, wnid)
                labels.append(_Counted((label,)))
                if note:
                    notes.append(note)
                digest.update(f"{file_name}\t{offset}\t{size}\t{label}\n".encode())
    if settings.verify_checksums:
        problem = count_problem(split, labels)  # type: ignore[arg-type]
        if problem:
            raise ArchiveError(
                f"{split_input.archive}: {problem}, unlike full ILSVRC 2012 — is the copy "
                "complete? For a subset, turn off verify_checksums (the counts are then not "
                "checked)"
            )
    return TreeCheck(
        path=split_input.archive,
        name=f"{source.name}:{split}",
        size=sum(r["size"] for r in reports),
        modified=0.0,
        sha256=digest.hexdigest(),
        md5="",
        num_members=len(labels),
        verified_against=COUNTED if settings.verify_checksums else None,
        cached=all(r.get("reused") for r in reports),
        layout=source.name,
        ignored=sorted({s for r in reports for s in r["ignored"]}),
        labels_from_layout=sorted(notes, key=lambda n: n["file_name"]),
    )
