"""What the extracted layouts share: folders of image files instead of tarballs.

An extracted split is a folder: train holds one folder per class (`<wnid>/`, or the class
tar `<wnid>.tar` as it comes out of the train tarball); validation is flat or in class
folders; test is flat. One work item per class folder (or per flat folder), listed one
level at a time, so 1.28 M files never pass through a shuffle one by one; a shard's files
are read in parallel. Every image keeps the `file_name` the tarballs give it (its own file
name), so the shards are the tarballs' to the byte.

Nothing publishes a checksum of an extracted tree, so `check_tree` counts instead (split
totals, images per class) and hashes every file, caching a manifest (path, size, version →
sha256) so a re-run reads only what changed. Files that are no images of the dataset
(`.DS_Store`, `Thumbs.db`, `__MACOSX/`, a `*.txt` beside the images) are left out and
listed in lineage; an image under a folder that is no ILSVRC 2012 class is an error.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import logging
import posixpath
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from imagenet_beam import dataset, storage
from imagenet_beam.sources.archive_checks import ArchiveCheck, ArchiveCheckError
from imagenet_beam.sources.base import MemberRef, Source, SplitInput, WorkItem
from imagenet_beam.sources.tar import ArchiveError, walk_tar

log = logging.getLogger(__name__)

STRAY_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "ehthumbs.db"})
STRAY_FOLDERS = frozenset({"__MACOSX", ".AppleDouble", ".Trashes", ".Spotlight-V100"})
STRAY_SUFFIXES = (".txt",)
CLASS_TAR_SUFFIX = ".tar"
# Full ILSVRC 2012 (ILSVRC2012.md): 732 to 1,300 train images a class, 50 validation.
TRAIN_PER_CLASS = (732, 1300)
VALIDATION_PER_CLASS = 50
COUNTED = "counts"  # `verified_against` of a tree whose counts are the full dataset's
_MANIFEST_VERSION = 1
_PARALLEL = 16
_HASH_CHUNK = 8 << 20
_WHOLE_DOWNLOAD = 16 << 20  # a file up to this size is hashed from one GCS download


def is_stray(name: str) -> bool:
    """A file that is no image of the dataset: system clutter, notes beside the images."""
    return (
        name in STRAY_NAMES
        or name.startswith(".")
        or name.endswith("~")
        or name.lower().endswith(STRAY_SUFFIXES)
    )


class LabelMismatch(ValueError):
    """A validation image whose label in the layout is not TFDS's."""


@dataclasses.dataclass(frozen=True)
class Folder:
    """One work item of a tree: a folder of images (or a class tar) and the wnid its
    place in the tree gives its images (None where the place says nothing)."""

    path: str
    wnid: str | None
    kind: str = "folder"  # or "tar": a class tar, walked by its headers

    def to_detail(self) -> list:
        return [self.path, self.wnid, self.kind]


@dataclasses.dataclass
class TreeCheck(ArchiveCheck):
    """An extracted split's check: `size` the images' bytes, `sha256` the manifest's (every
    image's path in the tree, size and sha256), `num_members` its images; `ignored` the
    stray files left out; `labels_from_layout` the validation images whose label was taken
    from the layout where it disagrees with TFDS's."""

    layout: str = ""
    ignored: list[str] = dataclasses.field(default_factory=list)
    labels_from_layout: list[dict] = dataclasses.field(default_factory=list)


def _class_index(wnid: str) -> int | None:
    return dataset.class_index().get(wnid)


def layout_label(
    split: str, file_name: str, wnid: str | None, where: str, trust: bool
) -> tuple[int, dict | None]:
    """(an image's label, a note when the layout's label was taken over TFDS's), for every
    layout: train from its wnid (class folder, name suffix), test none, validation TFDS's
    by number — where the layout gives its own (`wnid`, found in `where`) and it disagrees,
    a LabelMismatch, or with `trust` the layout's. Raises ValueError for a validation name
    without its number."""
    if split == dataset.TEST:
        return dataset.TEST_LABEL, None
    if split == dataset.TRAIN:
        return dataset.class_index()[wnid], None
    tfds_label = dataset.validation_label(file_name)
    if wnid is None:
        return tfds_label, None
    own = _class_index(wnid)
    if own == tfds_label:
        return tfds_label, None
    tfds_wnid = dataset.class_names()[tfds_label]
    if own is None:
        raise LabelMismatch(
            f"validation image {file_name} is {wnid} in {where}, which is no ILSVRC 2012 "
            f"class (TFDS's validation labels say {tfds_wnid}): check the layout"
        )
    if not trust:
        raise LabelMismatch(
            f"validation image {file_name} is {wnid} in {where} but "
            f"{tfds_wnid} (label {tfds_label}) in TFDS's validation labels: check the "
            "layout, or run with --trust_layout_labels to take the layout's label "
            "(recorded in lineage.json)"
        )
    return own, {"file_name": file_name, "layout": wnid, "tfds": tfds_wnid}


class TreeSource(Source, abc.ABC):
    """A layout of extracted folders. Subclasses say where each split's folder is
    (`split_folders`) and what label the layout itself gives a validation image
    (`layout_wnid`)."""

    trust_layout_labels: bool = False

    def configured(self, settings: Any) -> TreeSource:
        copy = type(self).__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.trust_layout_labels = bool(getattr(settings, "trust_layout_labels", False))
        return copy

    @abc.abstractmethod
    def split_folders(self, manual_dir: str, split: str) -> list[str]:
        """The folders that would hold `split`, in order of preference."""

    def layout_wnid(self, split: str, file_name: str, folder: Folder) -> str | None:
        """The wnid the layout gives an image: by default its class folder's."""
        return folder.wnid

    # --- find ------------------------------------------------------------------------

    def present(self, manual_dir: str) -> bool:
        return any(
            storage.is_dir(path) for split in dataset.SPLITS
            for path in self.split_folders(manual_dir, split)
        )

    def find(self, manual_dir, splits, test_patch=None, test_archive=None):
        found, missing = {}, []
        for split in splits:
            if split == dataset.TEST and test_archive:
                continue  # a named test tar is the tarballs'
            folders = [p for p in self.split_folders(manual_dir, split) if storage.is_dir(p)]
            if len(folders) > 1:
                raise ArchiveError(
                    f"{manual_dir} has the {split} split twice: {' and '.join(folders)}; "
                    "keep one of them"
                )
            if folders:
                found[split] = SplitInput(split, folders[0], layout=self.name, files=())
            else:
                wanted = " or ".join(
                    storage.basename(p.rstrip("/")) + "/"
                    for p in self.split_folders(manual_dir, split)
                )
                missing.append(f"{split}: {self.describe_missing(split, wanted)}")
        return found, missing

    def describe_missing(self, split: str, wanted: str) -> str:
        return f"a folder {wanted}"

    # --- walk ------------------------------------------------------------------------

    def folders(self, split: str, root: str) -> tuple[list[Folder], list[str]]:
        """A split's work items, and the stray files met at its top (relative paths).
        Raises ArchiveError for what cannot be part of the split."""
        files, dirs = storage.list_dir(root)
        strays = [f.name for f in files if is_stray(f.name)]
        files = [f for f in files if not is_stray(f.name)]
        strays += [d + "/" for d in dirs if d in STRAY_FOLDERS or d.startswith(".")]
        dirs = [d for d in dirs if d not in STRAY_FOLDERS and not d.startswith(".")]
        unknown = [d for d in dirs if _class_index(d) is None]
        if unknown:
            more = f"; {len(unknown) - 1} more such folders" if len(unknown) > 1 else ""
            raise ArchiveError(
                f"{storage.join(root, unknown[0])}/ is no ILSVRC 2012 class (its name is "
                f"not one of the 1000 wnids{more}): move it out of the manual directory"
            )
        items = [Folder(storage.join(root, d), d) for d in dirs]
        if split == dataset.TRAIN:
            tars = [f for f in files if f.name.endswith(CLASS_TAR_SUFFIX)]
            loose = [f for f in files if not f.name.endswith(CLASS_TAR_SUFFIX)]
            if loose:
                raise ArchiveError(
                    f"{storage.join(root, loose[0].name)} is not in a class folder: train "
                    "images go in <wnid>/ folders (or <wnid>.tar class tars)"
                )
            for tar in tars:
                wnid = tar.name[: -len(CLASS_TAR_SUFFIX)]
                if _class_index(wnid) is None:
                    raise ArchiveError(
                        f"{storage.join(root, tar.name)} is no ILSVRC 2012 class tar (not "
                        "<wnid>.tar for one of the 1000 wnids): move it out of the manual "
                        "directory"
                    )
                if wnid in dirs:
                    raise ArchiveError(
                        f"{root} has class {wnid} twice, as {wnid}/ and {tar.name}: keep one"
                    )
                items.append(Folder(storage.join(root, tar.name), wnid, "tar"))
        elif files:
            if dirs:
                raise ArchiveError(
                    f"{root} has both images of its own ({files[0].name}, …) and class "
                    f"folders ({dirs[0]}/, …): keep one arrangement"
                )
            items = [Folder(root, None)]
        elif dirs and split == dataset.TEST:
            raise ArchiveError(
                f"{root}/{dirs[0]}/: test images have no class; keep them flat in {root}"
            )
        return sorted(items, key=lambda f: f.path), strays

    def work_items(self, split: str, path: str) -> Iterator[WorkItem]:
        items, _ = self.folders(split, path)
        for folder in items:
            yield split, path, folder.to_detail()

    def _label(self, split: str, file_name: str, folder: Folder) -> tuple[int, dict | None]:
        """(the image's label, a note when the layout's label was taken over TFDS's)."""
        if split == dataset.VALIDATION:
            wnid = self.layout_wnid(split, file_name, folder)
            where = self.where_label(folder) if wnid is not None else ""
            return layout_label(split, file_name, wnid, where, self.trust_layout_labels)
        return layout_label(split, file_name, folder.wnid, "", self.trust_layout_labels)

    def where_label(self, folder: Folder) -> str:
        return f"its class folder {folder.path}"

    def _members(
        self, split: str, folder: Folder, labelled: bool = True
    ) -> tuple[list[MemberRef], list[str], list, dict[str, int]]:
        """(images, stray files, label notes, each file's version) of one work item
        (not labelled: every label -1, for sizes alone)."""
        refs, strays, notes, versions = [], [], [], {}
        if folder.kind == "tar":
            with storage.open_read(folder.path) as f:
                entries = list(walk_tar(f, folder.path))
            for e in entries:
                name = posixpath.basename(e.name)
                if is_stray(name) or e.name.split("/", 1)[0] in STRAY_FOLDERS:
                    strays.append(f"{storage.basename(folder.path)}:{e.name}")
                    continue
                label, _ = self._label(split, name, folder) if labelled else (-1, None)
                refs.append(MemberRef(split, folder.path, e.offset, e.size, e.name, label))
            return refs, strays, notes, versions
        files, dirs = storage.list_dir(folder.path)
        for d in dirs:
            if d in STRAY_FOLDERS or d.startswith("."):
                strays.append(d + "/")
                continue
            raise ArchiveError(
                f"{storage.join(folder.path, d)}/ is a folder inside a class folder: images "
                "go directly in it; move the folder out"
            )
        for f in files:
            if is_stray(f.name):
                strays.append(f.name)
                continue
            label, note = self._label(split, f.name, folder) if labelled else (-1, None)
            if note:
                notes.append(note)
            path = storage.join(folder.path, f.name)
            refs.append(MemberRef(split, path, 0, f.size, f.name, label))
            versions[path] = f.version
        return refs, strays, notes, versions

    def index(self, item: WorkItem) -> list[MemberRef]:
        split, _, detail = item
        return self._members(split, Folder(*detail))[0]

    # --- read ------------------------------------------------------------------------

    def read_shard(self, refs: Sequence[MemberRef]) -> Iterator[tuple[MemberRef, bytes]]:
        """Extracted files whole, many at a time; class tars by offset, as tarballs."""
        whole = [r for r in refs if r.offset == 0 and storage.basename(r.archive) == r.file_name]
        in_tars = [r for r in refs if not (r.offset == 0
                                           and storage.basename(r.archive) == r.file_name)]
        for ref, data in zip(whole, storage.read_files([r.archive for r in whole]), strict=True):
            if len(data) != ref.size:
                raise ArchiveError(
                    f"{ref.archive} has {len(data):,} bytes, not the {ref.size:,} it had when "
                    "it was listed: it changed during the conversion; run again once the "
                    "folder is complete"
                )
            yield ref, data
        yield from super().read_shard(in_tars)

    # --- check -----------------------------------------------------------------------

    def input_size(self, split_input: SplitInput) -> int:
        """The images' bytes; 0 for a tree that is no split (the check says why)."""
        split = split_input.split
        try:
            items, _ = self.folders(split, split_input.archive)
            with ThreadPoolExecutor(_PARALLEL) as pool:
                walked = list(pool.map(lambda f: self._members(split, f, False), items))
        except (ArchiveError, OSError):
            return 0
        return sum(ref.size for refs, *_ in walked for ref in refs)

    def check(self, split_input: SplitInput, settings: Any, cache_dir: str) -> list[Any]:
        return [check_tree(self.configured(settings), split_input, settings, cache_dir)]

    def checked_before(self, split_input: SplitInput, settings: Any, cache_dir: str) -> bool:
        return storage.exists(_manifest_path(cache_dir, split_input.archive))


def _manifest_path(cache_dir: str, root: str) -> str:
    digest = hashlib.sha1(root.encode("utf-8")).hexdigest()
    return storage.join(cache_dir, f"tree-{digest}.json")


def _load_manifest(path: str, root: str) -> dict[str, list]:
    if not storage.exists(path):
        return {}
    try:
        stored = json.loads(storage.read_bytes(path))
    except ValueError:
        return {}
    if stored.get("version") != _MANIFEST_VERSION or stored.get("root") != root:
        return {}
    return stored.get("files", {})


def _hash_file(path: str, size: int) -> str:
    """sha256 of one file. An image on GCS is one download (a reader through Beam's
    filesystem first fetches the object's metadata: twice the requests, for 1.28 M
    objects); locally the file is read directly, without Beam's per-file open. Large
    files (class tars) are streamed."""
    if storage.is_remote(path):
        if path.startswith("gs://") and size <= _WHOLE_DOWNLOAD:
            data = storage.gcs_blob(path).download_as_bytes(checksum=None)
            return hashlib.sha256(data).hexdigest()
        digest = hashlib.sha256()
        with storage.open_read(path) as f:
            for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest()
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _relative(root: str, path: str) -> str:
    return path[len(root.rstrip("/")) + 1:]


def check_tree(
    source: TreeSource, split_input: SplitInput, settings: Any, cache_dir: str
) -> TreeCheck:
    """Lists and labels every image of an extracted split (the same walk the conversion
    does), checks the counts of full ILSVRC 2012 when `verify_checksums`, and hashes every
    file not hashed before with the same size and version. Raises ArchiveCheckError."""
    split, root = split_input.split, split_input.archive
    try:
        items, strays = source.folders(split, root)

        def walk(folder: Folder):
            return folder, *source._members(split, folder)

        with ThreadPoolExecutor(_PARALLEL) as pool:
            walked = list(pool.map(walk, items))
    except (ArchiveError, LabelMismatch, ValueError) as e:
        raise ArchiveCheckError(str(e), {root: str(e)}) from None
    refs = [r for _, mine, _, _, _ in walked for r in mine]
    strays = sorted(set(strays) | {  # a flat folder's own strays are met twice
        _relative(root, storage.join(folder.path, s)) if folder.kind == "folder" else s
        for folder, _, found, _, _ in walked for s in found
    })
    notes = sorted((n for *_, mine, _ in walked for n in mine), key=lambda n: n["file_name"])
    if not refs:
        message = f"{root} holds no images for the {split} split"
        raise ArchiveCheckError(f"{message}: put them there, or leave {split} out of --splits",
                                {root: message})
    if settings.verify_checksums:
        problem = count_problem(split, refs)
        if problem:
            raise ArchiveCheckError(
                f"{root}: {problem}, unlike full ILSVRC 2012 — is the copy complete? For a "
                "subset, turn off verify_checksums (the counts are then not checked)",
                {root: problem},
            )

    # Every file once: the images, and the class tars whole.
    files: dict[str, tuple[int, int]] = {}
    for _, mine, _, _, versions in walked:
        for ref in mine:
            if ref.archive in versions:
                files[ref.archive] = (ref.size, versions[ref.archive])
    tars = [folder.path for folder, *_ in walked if folder.kind == "tar"]
    for path in tars:
        identity = storage.identity(path)
        files[path] = (identity["size"], identity.get("mtime_ns", identity.get("generation")))
    wanted = {r.archive for r in refs}
    manifest_file = _manifest_path(cache_dir, root)
    cached = _load_manifest(manifest_file, root)
    rows: dict[str, list] = {}
    to_hash = []
    for path in sorted(wanted):
        size, version = files[path]
        rel = _relative(root, path)
        hit = cached.get(rel)
        if hit and hit[0] == size and hit[1] == version:
            rows[rel] = hit
        else:
            to_hash.append((rel, path, size, version))
    if to_hash:
        log.info("%s: hashing %d of %d files%s", root, len(to_hash), len(wanted),
                 " (the others were hashed before)" if len(to_hash) < len(wanted) else "")
    try:
        with ThreadPoolExecutor(_PARALLEL) as pool:
            for (rel, _, size, version), sha in zip(
                to_hash, pool.map(lambda t: _hash_file(t[1], t[2]), to_hash), strict=True
            ):
                rows[rel] = [size, version, sha]
    except OSError as e:
        raise ArchiveCheckError(f"{root}: a file cannot be read ({e}); fix or remove it",
                                {root: "unreadable file"}) from None
    if to_hash:
        storage.makedirs(cache_dir)
        record = {"version": _MANIFEST_VERSION, "root": root, "files": rows}
        storage.write_bytes(manifest_file, json.dumps(record, sort_keys=True).encode("utf-8"))
    digest = hashlib.sha256()
    for rel in sorted(rows):
        digest.update(f"{rel}\t{rows[rel][0]}\t{rows[rel][2]}\n".encode())
    return TreeCheck(
        path=root,
        name=f"{source.name}:{split}",
        size=sum(files[p][0] for p in wanted),
        modified=0.0,
        sha256=digest.hexdigest(),
        md5="",
        num_members=len(refs),
        verified_against=COUNTED if settings.verify_checksums else None,
        cached=not to_hash,
        layout=source.name,
        ignored=strays,
        labels_from_layout=notes,
    )


def count_problem(split: str, refs: Sequence[MemberRef]) -> str | None:
    """What differs from full ILSVRC 2012's counts, or None."""
    total, full = len(refs), dataset.FULL_SPLIT_SIZES[split]
    if total != full:
        return f"{total:,} {split} images, not {full:,}"
    if split == dataset.TEST:
        return None
    per_class: dict[int, int] = {}
    for ref in refs:
        per_class[ref.label] = per_class.get(ref.label, 0) + 1
    if len(per_class) != dataset.NUM_CLASSES:
        return f"{split} images of {len(per_class)} classes, not {dataset.NUM_CLASSES}"
    names = dataset.class_names()
    if split == dataset.TRAIN:
        low, high = TRAIN_PER_CLASS
        off = sorted((n, names[c]) for c, n in per_class.items() if not low <= n <= high)
        if off:
            return f"class {off[0][1]} has {off[0][0]} train images, not {low} to {high}"
        return None
    off = sorted((n, names[c]) for c, n in per_class.items() if n != VALIDATION_PER_CLASS)
    if off:
        return f"class {off[0][1]} has {off[0][0]} validation images, not {VALIDATION_PER_CLASS}"
    return None
