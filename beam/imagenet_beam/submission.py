"""From a model's predictions to the ILSVRC test server's submission file, numbered right.

The server takes, per test image in file-number order, one line of five 1-indexed class
ids, best first ("Classification submission (top-5 cls error)"). Two traps:
- the shards are stored in hashed key order (as TFDS's), so predictions made by reading
  them come out of order; here they are matched to images by file name and put in order;
- the devkit numbers classes by its meta.mat's ILSVRC2012_ID (id 1 = n02119789, kit fox),
  not by TFDS's labels.txt (line 1 = n01440764, tench). So the devkit's numbering is used
  when the devkit is given, TFDS's (1 + label) only when asked for, and no guess is made.

Predictions: CSV (`file_name,p1,p2,p3,p4,p5`, a header row optional), JSON lines
(`{"file_name": …, "top5": […]}`) or .npz (`file_name` and `top5` arrays); classes as
TFDS labels (0-based, what a model trained on these shards predicts) or wnids. The split's
file names and count come from the published version in data_dir.
`python -m imagenet_beam submission|score|check-submission` (cli.py) call this module.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import posixpath
import re
from collections.abc import Sequence

from imagenet_beam import dataset, formats, layout, settings, storage
from imagenet_beam.errors import DataError
from imagenet_beam.formats import tfds_schema
from imagenet_beam.layout import DATASET_INFO_FILE, LINEAGE_FILE, OutputLayout
from imagenet_beam.sources.devkit import Devkit, read_devkit

NUMBERING_DEVKIT = "devkit"  # the devkit's ILSVRC2012_ID (meta.mat): what the server's readme says
NUMBERING_TFDS = "tfds"  # 1 + TFDS label: the line number in TFDS's labels.txt
NUMBERINGS = (NUMBERING_DEVKIT, NUMBERING_TFDS)
TOP_K = 5
SUBMISSION_SPLITS = (dataset.TEST, dataset.VALIDATION)
CSV_HEADER = ("file_name", *(f"p{i}" for i in range(1, TOP_K + 1)))
NPZ_FILE_NAMES, NPZ_TOP5 = "file_name", "top5"
PREDICTION_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
                       ".npz": "npz"}
MAX_OFFENDERS = 5  # named per kind of problem
WNID = re.compile(r"n\d{8}")
IMAGE_NUMBER = re.compile(r"ILSVRC2012_(?:val|test)_(\d{8})")
PARTIAL_SUFFIX = ".partial"

NUMBERING_TRAP = (
    "the test server numbers classes by the devkit's ILSVRC2012_ID (data/meta.mat: id 1 is "
    "n02119789, kit fox), TFDS by the line of labels.txt (line 1 is n01440764, tench); "
    "mixing them scores ~0.1% top-1"
)


class SubmissionError(DataError):
    """Predictions or a submission that cannot be used; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image's predicted classes as the file gives them (ints: TFDS labels; str: wnids)."""

    file_name: str
    classes: tuple[int | str, ...]
    where: str  # "line 3", "row 3": for messages


@dataclasses.dataclass(frozen=True)
class SplitImages:
    """A published split's images in file-number order, with TFDS's label of each (-1 on
    test)."""

    version_dir: str
    split: str
    file_names: tuple[str, ...]
    labels: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Written:
    path: str
    split: str
    num_lines: int
    numbering: str
    described: str  # which numbering, in words


@dataclasses.dataclass(frozen=True)
class Score:
    num_images: int
    top1_error: float  # fractions, 0..1
    top5_error: float
    ground_truth: str  # whose, in words


# --- the published split -----------------------------------------------------------------


def version_dir_of(data_dir: str) -> str:
    """The version directory in a TFDS data_dir (or data_dir itself when it is one)."""
    for candidate in (OutputLayout(data_dir).version_dir, data_dir):
        if any(storage.exists(storage.join(candidate, name))
               for name in (LINEAGE_FILE, DATASET_INFO_FILE)):
            return candidate
    raise SubmissionError(
        f"{data_dir} holds no published {dataset.DATASET_NAME} {dataset.VERSION}: give as "
        f"--data_dir the TFDS data_dir the conversion wrote (it holds "
        f"{dataset.DATASET_NAME}/{dataset.VERSION}/)"
    )


def _split_shards(version_dir: str, split: str) -> tuple[str, list[tuple[str, int]]]:
    """(file format, [(shard file, examples)]) of a split, from lineage.json (ours) or
    dataset_info.json (a version TFDS built)."""
    from imagenet_beam import report

    try:
        record = report.published_lineage(version_dir)
    except report.ReportError as e:
        raise SubmissionError(str(e)) from None
    if record is not None:
        present = sorted(record.splits)
        if split in record.splits:
            shards = [(s.file, s.num_examples) for s in record.splits[split].shards]
            return record.options["file_format"], shards
    else:
        info = json.loads(storage.read_bytes(storage.join(version_dir, DATASET_INFO_FILE)))
        file_format = info.get("fileFormat") or settings.TFRECORD
        by_name = {s["name"]: s for s in info.get("splits", [])}
        present = sorted(by_name)
        if split in by_name:
            lengths = [int(n) for n in by_name[split].get("shardLengths", [])]
            return file_format, [
                (layout.shard_file_name(split, file_format, i, len(lengths)), n)
                for i, n in enumerate(lengths)
            ]
    raise SubmissionError(
        f"{version_dir} has no {split} split (it has {', '.join(present) or 'none'}): "
        f"convert it with --splits including {split}"
    )


def _number_order(file_name: str) -> tuple[int, str]:
    base = posixpath.basename(file_name)
    match = IMAGE_NUMBER.match(base)
    return (int(match.group(1)) if match else -1, base)


def published_split(data_dir: str, split: str) -> SplitImages:
    """Every file name and label of a published split, read from its shards (each record
    once, a shard at a time), in file-number order."""
    version_dir = version_dir_of(data_dir)
    file_format, shards = _split_shards(version_dir, split)
    shard_format = formats.get(file_format)
    found: list[tuple[str, int]] = []
    for shard, count in shards:
        for record in shard_format.read_records(
            storage.join(version_dir, shard), list(range(count))
        ):
            example = tfds_schema.parse_example(record)
            name = example.get(tfds_schema.FEATURE_FILE_NAME, b"")
            found.append((name.decode("utf-8"), int(example.get(tfds_schema.FEATURE_LABEL, -1))))
    found.sort(key=lambda item: _number_order(item[0]))
    return SplitImages(
        version_dir, split, tuple(n for n, _ in found), tuple(label for _, label in found)
    )


# --- predictions --------------------------------------------------------------------------


def _class_token(text: str) -> int | str:
    text = text.strip()
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else text


def _read_csv(data: bytes, path: str) -> list[Prediction]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    out = []
    for number, row in enumerate(rows, start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if number == 1 and row[0].strip() == CSV_HEADER[0]:
            continue
        out.append(Prediction(
            row[0].strip(), tuple(_class_token(c) for c in row[1:] if c.strip()),
            f"line {number}",
        ))
    return out


def _read_jsonl(data: bytes, path: str) -> list[Prediction]:
    out = []
    for number, line in enumerate(data.decode("utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as e:
            raise SubmissionError(
                f"{path} line {number} is not JSON ({e}); each line must be "
                '{"file_name": "...", "top5": [...]}'
            ) from None
        if not isinstance(item, dict) or not isinstance(item.get("file_name"), str) or \
                not isinstance(item.get("top5"), list):
            raise SubmissionError(
                f"{path} line {number} is not an object with a file_name (text) and top5 (a "
                'list): each line must be {"file_name": "...", "top5": [...]}'
            )
        classes = tuple(
            c if isinstance(c, str) or (isinstance(c, int) and not isinstance(c, bool))
            else repr(c)  # a float or other value: reported as not a class
            for c in item["top5"]
        )
        out.append(Prediction(item["file_name"], classes, f"line {number}"))
    return out


def _read_npz(data: bytes, path: str) -> list[Prediction]:
    import numpy as np

    try:
        arrays = np.load(io.BytesIO(data), allow_pickle=False)
        absent = [key for key in (NPZ_FILE_NAMES, NPZ_TOP5) if key not in arrays.files]
        if absent:
            raise SubmissionError(
                f"{path} has no `{absent[0]}` array: an .npz of predictions holds `file_name` "
                "(N names) and `top5` (N x 5 classes)"
            )
        names, top5 = arrays[NPZ_FILE_NAMES], arrays[NPZ_TOP5]
    except SubmissionError:
        raise
    except (ValueError, OSError, EOFError) as e:  # not an npz, or object arrays (would need pickle)
        raise SubmissionError(
            f"{path} is not an .npz of plain arrays ({e}): save `file_name` as strings and "
            "`top5` as integers or wnid strings, with numpy.savez"
        ) from None
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise SubmissionError(f"{path}: `file_name` must be a 1-D array of strings")
    if top5.dtype.kind not in "iuUS":
        raise SubmissionError(
            f"{path}: `top5` holds {top5.dtype} values; give TFDS labels as integers or wnids"
        )
    if top5.ndim != 2 or len(top5) != len(names):
        raise SubmissionError(
            f"{path}: `top5` has shape {top5.shape}, it must be ({len(names)}, {TOP_K}): one "
            "row of five classes per file name"
        )

    def text(value) -> str:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    return [
        Prediction(
            text(name),
            tuple(int(c) if top5.dtype.kind in "iu" else _class_token(text(c)) for c in row),
            f"row {i}",
        )
        for i, (name, row) in enumerate(zip(names.tolist(), top5.tolist(), strict=True))
    ]


_READERS = {"csv": _read_csv, "jsonl": _read_jsonl, "npz": _read_npz}


def read_predictions(path: str) -> list[Prediction]:
    """The predictions in a .csv, .jsonl (.json, .ndjson) or .npz file, as given."""
    suffix = os.path.splitext(path)[1].lower()
    kind = PREDICTION_SUFFIXES.get(suffix)
    if kind is None:
        raise SubmissionError(
            f"{path}: predictions must be a .csv (file_name,p1,...,p5), .jsonl "
            '({"file_name": ..., "top5": [...]}) or .npz (file_name, top5) file'
        )
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        raise SubmissionError(f"{path} does not exist: give the predictions file") from None
    try:
        return _READERS[kind](data, path)
    except UnicodeDecodeError:
        raise SubmissionError(f"{path} is not UTF-8 text: is it a {kind} file?") from None


# --- checking them against the split -----------------------------------------------------


def _offenders(kind: str, items: list[str]) -> str:
    first = ", ".join(items[:MAX_OFFENDERS]) + (", …" if len(items) > MAX_OFFENDERS else "")
    return f"{len(items)} {kind} (first: {first})"


def _labels_of(prediction: Prediction, problems: dict[str, list[str]]) -> tuple[int, ...] | None:
    """The TFDS labels of one prediction, or None with its problem noted."""
    where = f"{prediction.where} {prediction.file_name or '(no file name)'}"
    if len(prediction.classes) != TOP_K:
        problems["lines without exactly five classes"].append(
            f"{where}: {len(prediction.classes)}")
        return None
    labels = []
    for c in prediction.classes:
        if isinstance(c, int):
            label = c if 0 <= c < dataset.NUM_CLASSES else None
        else:
            label = dataset.class_index().get(c) if WNID.fullmatch(c) else None
        if label is None:
            problems["classes out of range (TFDS labels 0..999 or one of the 1000 wnids)"].append(
                f"{where}: {c}")
            return None
        labels.append(label)
    if len(set(labels)) != TOP_K:
        repeated = next(c for i, c in enumerate(prediction.classes)
                        if labels.index(labels[i]) != i)
        problems["lines with a class twice"].append(f"{where}: {repeated}")
        return None
    return tuple(labels)


def _name_index(file_names: Sequence[str]) -> dict[str, int]:
    """Each image under its stored name, its base name, and that without the extension."""
    index: dict[str, int] = {}
    ambiguous: set[str] = set()
    for i, name in enumerate(file_names):
        base = posixpath.basename(name)
        for key in {name, base, os.path.splitext(base)[0]}:
            if key in index and index[key] != i:
                ambiguous.add(key)
            index[key] = i
    return {k: v for k, v in index.items() if k not in ambiguous}


def ordered_labels(
    predictions: Sequence[Prediction], images: SplitImages, where: str = "the predictions"
) -> list[tuple[int, ...]]:
    """The five TFDS labels of each image of the split, in file-number order; a
    SubmissionError naming the first offenders of every kind of problem found."""
    problems: dict[str, list[str]] = {
        "lines without exactly five classes": [],
        "classes out of range (TFDS labels 0..999 or one of the 1000 wnids)": [],
        "lines with a class twice": [],
        f"file names not in the {images.split} split": [],
        "images predicted more than once": [],
        "images without a prediction": [],
    }
    kinds = {type(c) for p in predictions for c in p.classes}
    if kinds == {int, str}:
        raise SubmissionError(
            f"{where} mix numbers and wnids as classes: give all classes as TFDS labels "
            "(0..999) or all as wnids"
        )
    index = _name_index(images.file_names)
    ordered: list[tuple[int, ...] | None] = [None] * len(images.file_names)
    seen: dict[int, str] = {}
    for prediction in predictions:
        labels = _labels_of(prediction, problems)
        position = index.get(prediction.file_name)
        if position is None:
            problems[f"file names not in the {images.split} split"].append(
                f"{prediction.where} {prediction.file_name!r}")
            continue
        if position in seen:
            problems["images predicted more than once"].append(
                f"{images.file_names[position]} ({seen[position]} and {prediction.where})")
            continue
        seen[position] = prediction.where
        ordered[position] = labels
    problems["images without a prediction"] = [
        name for i, name in enumerate(images.file_names) if i not in seen
    ]
    found = [_offenders(kind, items) for kind, items in problems.items() if items]
    if found:
        raise SubmissionError(
            f"{where} cannot make a {images.split} submission for the "
            f"{len(images.file_names)} images of {images.version_dir}: " + "; ".join(found)
        )
    return [labels for labels in ordered if labels is not None]


# --- numbering ----------------------------------------------------------------------------


def _devkit(devkit: Devkit | str | None) -> Devkit | None:
    return read_devkit(devkit) if isinstance(devkit, str) else devkit


def choose_numbering(numbering: str | None, devkit: Devkit | None) -> str:
    """The devkit's numbering by default when a devkit is given; TFDS's only when asked."""
    if numbering is not None and numbering not in NUMBERINGS:
        raise SubmissionError(f"--numbering={numbering}: choose devkit or tfds")
    if numbering is None:
        if devkit is None:
            raise SubmissionError(
                "give --devkit=ILSVRC2012_devkit_t12.tar.gz (the numbering the test server "
                f"uses) or choose --numbering=tfds explicitly: {NUMBERING_TRAP}"
            )
        return NUMBERING_DEVKIT
    if numbering == NUMBERING_DEVKIT and devkit is None:
        raise SubmissionError(
            "--numbering=devkit needs --devkit=ILSVRC2012_devkit_t12.tar.gz (its meta.mat "
            "holds the ILSVRC2012_ID of each class)"
        )
    return numbering


def describe_numbering(numbering: str, devkit: Devkit | None) -> str:
    if numbering == NUMBERING_DEVKIT:
        return (f"classes numbered by the devkit's ILSVRC2012_ID (meta.mat of {devkit.path}), "
                "as the test server's readme asks")
    return ("classes numbered 1 + TFDS label (the line of TFDS's labels.txt), as "
            "--numbering=tfds asked; the devkit's readme asks for its ILSVRC2012_ID instead: "
            "score a validation submission against the devkit to check")


def class_ids(labels: tuple[int, ...], numbering: str, devkit: Devkit | None) -> tuple[int, ...]:
    """The submission's 1-indexed ids of TFDS labels in a numbering."""
    if numbering == NUMBERING_DEVKIT:
        return tuple(devkit.devkit_id_of_label(label) for label in labels)
    return tuple(label + 1 for label in labels)


# --- writing, reading, scoring a submission ----------------------------------------------


def _same_file(a: str, b: str) -> bool:
    if storage.is_remote(a) or storage.is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: str, directory: str) -> bool:
    if storage.is_remote(path) != storage.is_remote(directory):
        return False
    if storage.is_remote(path):
        return path.startswith(directory.rstrip("/") + "/")
    return os.path.realpath(path).startswith(os.path.realpath(directory) + os.sep)


def write_atomically(path: str, data: bytes, inputs: Sequence[str], protected: str) -> None:
    """Writes `data` under a temporary name beside `path`, then renames it over `path`.
    Refuses a path that is one of `inputs` or lies in `protected` (the dataset)."""
    for source in inputs:
        if source and _same_file(path, source):
            raise SubmissionError(
                f"--output={path} is an input of this command: choose another output file")
    if _inside(path, protected):
        raise SubmissionError(
            f"--output={path} lies inside the published dataset {protected}: write the "
            "submission elsewhere")
    if not storage.is_remote(path):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise SubmissionError(f"--output={path}: the folder {folder} does not exist")
        if os.path.isdir(path):
            raise SubmissionError(f"--output={path} is a folder: give a file name")
    tmp = storage.join(posixpath.dirname(path) if storage.is_remote(path)
                       else os.path.dirname(os.path.abspath(path)),
                       f".{storage.basename(path)}.{os.getpid()}{PARTIAL_SUFFIX}")
    try:
        storage.write_bytes(tmp, data)
        storage.rename_file(tmp, path)
    finally:
        if storage.exists(tmp):
            storage.delete_files([tmp])


def submission_text(ids: Sequence[tuple[int, ...]]) -> bytes:
    return "".join(" ".join(str(i) for i in line) + "\n" for line in ids).encode("ascii")


def make_submission(
    predictions: str,
    output: str,
    data_dir: str,
    split: str = dataset.TEST,
    devkit: Devkit | str | None = None,
    numbering: str | None = None,
) -> Written:
    """Writes the submission file for `split` from a predictions file (see the module's
    doc); returns what it wrote, with the numbering used."""
    if split not in SUBMISSION_SPLITS:
        raise SubmissionError(f"--split={split}: submissions are for test or validation")
    kit = _devkit(devkit)
    chosen = choose_numbering(numbering, kit)
    images = published_split(data_dir, split)
    labels = ordered_labels(read_predictions(predictions), images, predictions)
    ids = [class_ids(line, chosen, kit) for line in labels]
    write_atomically(output, submission_text(ids), [predictions, kit.path if kit else ""],
                     images.version_dir)
    return Written(output, split, len(ids), chosen, describe_numbering(chosen, kit))


def read_submission(path: str, num_images: int) -> list[tuple[int, ...]]:
    """The lines of a submission file, checked: `num_images` lines, each five distinct
    whole numbers in 1..1000, separated by spaces."""
    try:
        text = storage.read_bytes(path).decode("ascii")
    except FileNotFoundError:
        raise SubmissionError(f"{path} does not exist: give the submission file") from None
    except UnicodeDecodeError:
        raise SubmissionError(
            f"{path} is not a submission: it holds non-ASCII bytes; a submission is lines of "
            "five class ids") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    problems: dict[str, list[str]] = {
        "lines without exactly five class ids": [],
        "lines with an id that is not a whole number in 1..1000": [],
        "lines with a class twice": [],
    }
    out = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) != TOP_K:
            problems["lines without exactly five class ids"].append(f"line {number}: {line[:40]!r}")
            continue
        if not all(f.isdigit() and 1 <= int(f) <= dataset.NUM_CLASSES for f in fields):
            problems["lines with an id that is not a whole number in 1..1000"].append(
                f"line {number}: {line[:40]!r}")
            continue
        ids = tuple(int(f) for f in fields)
        if len(set(ids)) != TOP_K:
            problems["lines with a class twice"].append(f"line {number}: {line[:40]!r}")
            continue
        out.append(ids)
    found = [_offenders(kind, items) for kind, items in problems.items() if items]
    if len(lines) != num_images:
        found.insert(0, f"{len(lines):,} lines, one per image makes {num_images:,}")
    if found:
        raise SubmissionError(f"{path} is not a submission for {num_images:,} images: "
                              + "; ".join(found))
    return out


def check_submission(path: str, data_dir: str | None = None, split: str = dataset.TEST) -> int:
    """Checks a submission's shape; returns its number of lines. The count expected is the
    published split's (with data_dir), else full ILSVRC 2012's (100,000 test images)."""
    if split not in SUBMISSION_SPLITS:
        raise SubmissionError(f"--split={split}: submissions are for test or validation")
    if data_dir is None:
        count = dataset.FULL_SPLIT_SIZES[split]
    else:
        version_dir = version_dir_of(data_dir)
        count = sum(n for _, n in _split_shards(version_dir, split)[1])
    return len(read_submission(path, count))


def ground_truth_ids(
    images: SplitImages, devkit: Devkit | None
) -> tuple[list[int], str]:
    """The right class id of each validation image in file-number order, and whose it is:
    the devkit's (its numbering) when given, else TFDS's labels numbered 1 + label."""
    if devkit is None:
        return [label + 1 for label in images.labels], (
            "TFDS's labels in the shards, numbered 1 + label (--numbering=tfds); give "
            "--devkit to score in the test server's numbering"
        )
    ids = []
    for name in images.file_names:
        match = dataset.VALIDATION_NAME.fullmatch(posixpath.basename(name))
        if not match:
            raise SubmissionError(
                f"validation image {name} is not named ILSVRC2012_val_NNNNNNNN.JPEG: the "
                "devkit's ground truth cannot be looked up for it")
        ids.append(devkit.validation_id(int(match.group(1))))
    return ids, f"the devkit's ground truth ({devkit.path}), numbered by ILSVRC2012_ID"


def score(
    path: str, data_dir: str, split: str = dataset.VALIDATION, devkit: Devkit | str | None = None
) -> Score:
    """Top-1 and top-5 error of a validation submission file."""
    if split != dataset.VALIDATION:
        raise SubmissionError(
            f"--split={split}: only validation has labels to score against; the test split "
            "is scored by the test server")
    kit = _devkit(devkit)
    images = published_split(data_dir, split)
    lines = read_submission(path, len(images.file_names))
    truth, whose = ground_truth_ids(images, kit)
    if not lines:
        raise SubmissionError(f"{path}: the {split} split of {data_dir} has no images")
    top1 = sum(line[0] != right for line, right in zip(lines, truth, strict=True))
    top5 = sum(right not in line for line, right in zip(lines, truth, strict=True))
    return Score(len(lines), top1 / len(lines), top5 / len(lines), whose)


def percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"
