"""From predictions to the test server's file (`imagenet_beam.submission`, the `submission`,
`score` and `check-submission` commands), on a converted generated input with its devkit.

The devkit numbers classes in a shuffled order (id 1 = n02119789), TFDS by sorted wnid
(label 0 = n01440764): a "perfect model" scores 0% in the devkit numbering, and about
chance (~100% error) when its TFDS numbering is scored against the devkit's ground truth.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re

import numpy as np
import pytest

from imagenet_beam import dataset, submission, synthetic, synthetic_devkit
from imagenet_beam.submission import SubmissionError
from tests.conftest import convert, gcs_client, run_cli, version_dir

NUM_VALIDATION = 40
NUM_TEST = 15


@dataclasses.dataclass
class Published:
    generated: synthetic.GeneratedInput
    kit: synthetic_devkit.GeneratedDevkit
    data_dir: str


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Validation and test converted (TFRecord), the generated devkit beside the tars."""
    manual = str(tmp_path_factory.mktemp("manual"))
    generated = synthetic.generate_manual_dir(
        manual, num_validation=NUM_VALIDATION, num_test=NUM_TEST,
        splits=("validation", "test"), test_archives=("patched",),
    )
    kit = synthetic_devkit.write_devkit(manual, generated=generated)
    data_dir = str(tmp_path_factory.mktemp("data"))
    convert(manual, data_dir, "--splits=validation,test", "--num_shards=2")
    return Published(generated, kit, data_dir)


def perfect_rows(published: Published, as_wnids: bool = False) -> list[tuple[str, list]]:
    """The generated validation labels first, four other classes after, in tar order (not
    file-number order)."""
    names = dataset.class_names()
    rows = []
    for m in published.generated.split("validation"):
        labels = [(m.label + k * 97) % dataset.NUM_CLASSES for k in range(5)]
        rows.append((m.file_name, [names[c] for c in labels] if as_wnids else labels))
    return rows


def write_predictions(path, rows, kind: str) -> str:
    path = str(path)
    if kind == "csv":
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(submission.CSV_HEADER)
            for name, classes in rows:
                writer.writerow([name, *classes])
    elif kind == "jsonl":
        with open(path, "w") as f:
            for name, classes in rows:
                f.write(json.dumps({"file_name": name, "top5": classes}) + "\n")
    else:
        np.savez(path, file_name=np.array([n for n, _ in rows]),
                 top5=np.array([c for _, c in rows]))
    return path


def read_lines(path) -> list[list[int]]:
    with open(path) as f:
        return [[int(i) for i in line.split()] for line in f]


def expected_devkit_lines(published: Published, rows) -> list[list[int]]:
    """What the server wants, from the generator's own record of its devkit numbering:
    per image in file-number order, the devkit id of each predicted class."""
    names = dataset.class_names()
    by_name = {}
    for name, classes in rows:
        wnids = [c if isinstance(c, str) else names[c] for c in classes]
        by_name[name] = [published.kit.devkit_id(w) for w in wnids]
    return [by_name[name] for name in sorted(by_name)]


@pytest.mark.parametrize("as_wnids", [False, True], ids=["labels", "wnids"])
@pytest.mark.parametrize("kind", ["csv", "jsonl", "npz"])
def test_a_perfect_model_scores_zero_in_the_devkit_numbering(published, tmp_path, kind,
                                                              as_wnids):
    rows = perfect_rows(published, as_wnids)
    predictions = write_predictions(tmp_path / f"predictions.{kind}", rows, kind)
    out = str(tmp_path / "val.txt")
    written = submission.make_submission(
        predictions, out, published.data_dir, "validation", devkit=published.kit.path
    )
    assert written.numbering == "devkit" and written.num_lines == NUM_VALIDATION
    assert read_lines(out) == expected_devkit_lines(published, rows)
    result = submission.score(out, published.data_dir, devkit=published.kit.path)
    assert (result.top1_error, result.top5_error, result.num_images) == (0.0, 0.0, NUM_VALIDATION)


def test_the_cli_shows_the_numbering_trap(published, tmp_path):
    """Right numbering: 0% error. TFDS's numbering against the devkit's ground truth: about
    chance. The command says which numbering it wrote."""
    predictions = write_predictions(tmp_path / "p.csv", perfect_rows(published), "csv")
    right, wrong = tmp_path / "devkit.txt", tmp_path / "tfds.txt"
    common = [f"--predictions={predictions}", f"--data_dir={published.data_dir}",
              "--split=validation"]
    made = run_cli("submission", *common, f"--output={right}", f"--devkit={published.kit.path}")
    assert "numbered by the devkit's ILSVRC2012_ID" in made.stdout
    assert f"{NUM_VALIDATION} lines" in made.stdout
    scored = run_cli("score", str(right), f"--data_dir={published.data_dir}",
                     "--split=validation", f"--devkit={published.kit.path}")
    assert "top-1 error: 0.00%" in scored.stdout and "top-5 error: 0.00%" in scored.stdout

    made = submission.make_submission(str(predictions), str(wrong), published.data_dir,
                                      "validation", numbering="tfds")
    assert "numbered 1 + TFDS label" in made.described
    scored = run_cli("score", str(wrong), f"--data_dir={published.data_dir}",
                     f"--devkit={published.kit.path}")
    top1 = float(re.search(r"^top-1 error: (\d+\.\d\d)%$", scored.stdout, re.M).group(1))
    top5 = float(re.search(r"^top-5 error: (\d+\.\d\d)%$", scored.stdout, re.M).group(1))
    assert top1 >= 90 and top5 >= 80
    # Scored against TFDS's labels (no devkit), the TFDS-numbered file is perfect.
    scored = submission.score(str(wrong), published.data_dir)
    assert (scored.top1_error, scored.top5_error) == (0.0, 0.0)
    assert "TFDS's labels" in scored.ground_truth


def _refused(proc, *fragments: str) -> str:
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_no_devkit_and_no_numbering_is_refused_explaining_the_trap(published, tmp_path):
    predictions = write_predictions(tmp_path / "p.csv", perfect_rows(published), "csv")
    out = tmp_path / "out.txt"
    proc = run_cli("submission", f"--predictions={predictions}", f"--output={out}",
                   f"--data_dir={published.data_dir}", "--split=validation", check=False)
    _refused(proc, "--devkit", "--numbering=tfds", "n02119789", "n01440764")
    assert not out.exists()
    with pytest.raises(SubmissionError, match="--numbering=devkit needs --devkit"):
        submission.make_submission(predictions, str(out), published.data_dir, "validation",
                                   numbering="devkit")


def test_test_split_submission_is_in_file_number_order(published, tmp_path):
    """Predictions in the order the shards hold the images (hashed), classes as TFDS
    labels: the file has one line per test image in file-number order, 1-indexed devkit
    ids; check-submission accepts it for the published count."""
    images = submission.published_split(published.data_dir, "test")
    names = [m.file_name for m in published.generated.split("test")]
    assert list(images.file_names) == sorted(names)
    rng = np.random.default_rng(7)
    rows = [(name, [int(c) for c in rng.choice(dataset.NUM_CLASSES, 5, replace=False)])
            for name in reversed(names)]
    predictions = write_predictions(tmp_path / "test.jsonl", rows, "jsonl")
    out = tmp_path / "submission.txt"
    proc = run_cli("submission", f"--predictions={predictions}", f"--output={out}",
                   f"--data_dir={published.data_dir}", f"--devkit={published.kit.path}")
    assert f"{NUM_TEST} lines, one per test image in file-number order" in proc.stdout
    lines = read_lines(out)
    assert lines == expected_devkit_lines(published, rows)
    by_name = dict(rows)
    first = by_name["ILSVRC2012_test_00000001.JPEG"]
    assert lines[0] == [published.kit.devkit_id(dataset.class_names()[c]) for c in first]
    assert all(1 <= i <= 1000 for line in lines for i in line)
    checked = run_cli("check-submission", str(out), f"--data_dir={published.data_dir}")
    assert f"{NUM_TEST} lines of five distinct class ids" in checked.stdout
    with pytest.raises(SubmissionError, match=f"{NUM_TEST} lines, one per image makes 100,000"):
        submission.check_submission(str(out))  # without a data_dir: full ImageNet's count


def _drop(rows):
    return rows[1:]


def _extra(rows):
    return [*rows, rows[3]]


def _classes(row_index, change):
    def edit(rows):
        rows = [(n, list(c)) for n, c in rows]
        rows[row_index] = (rows[row_index][0], change(rows[row_index][1]))
        return rows
    return edit


def _rename(row_index, name):
    def edit(rows):
        rows = list(rows)
        rows[row_index] = (name, rows[row_index][1])
        return rows
    return edit


def _as_wnids_then(edit):
    def both(rows):
        names = dataset.class_names()
        return edit([(n, [names[c] for c in classes]) for n, classes in rows])
    return both


REFUSALS = {
    "missing image": (_drop, "1 images without a prediction (first: {0})"),
    "duplicated image": (_extra, "1 images predicted more than once (first: {3} (line 5 and"),
    "four classes": (_classes(2, lambda c: c[:4]),
                     "1 lines without exactly five classes (first: line 4 {2}: 4)"),
    "six classes": (_classes(2, lambda c: [*c, 999 - c[0]]),
                    "lines without exactly five classes (first: line 4 {2}: 6)"),
    "repeated class": (_classes(1, lambda c: [c[0], c[1], c[0], c[3], c[4]]),
                       "1 lines with a class twice (first: line 3 {1}: "),
    "class 1000": (_classes(0, lambda c: [1000, *c[1:]]),
                   "1 classes out of range (TFDS labels 0..999 or one of the 1000 wnids) "
                   "(first: line 2 {0}: 1000)"),
    "class -1": (_classes(0, lambda c: [*c[:4], -1]), "classes out of range"),
    "unknown wnid": (_as_wnids_then(_classes(0, lambda c: ["n99999999", *c[1:]])),
                     "1 classes out of range (TFDS labels 0..999 or one of the 1000 wnids) "
                     "(first: line 2 {0}: n99999999)"),
    "wnids and numbers mixed": (_classes(0, lambda c: ["n01440764", *c[1:]]),
                                "mix numbers and wnids"),
    "not in split": (_rename(0, "ILSVRC2012_val_00049999.JPEG"),
                     "1 file names not in the validation split (first: line 2 "
                     "'ILSVRC2012_val_00049999.JPEG')"),
    "test image in validation": (_rename(5, "ILSVRC2012_test_00000001.JPEG"),
                                 "file names not in the validation split"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_bad_predictions_are_refused_naming_the_first_offenders(published, tmp_path, case):
    edit, message = REFUSALS[case]
    rows = perfect_rows(published)
    names = [n for n, _ in rows]
    predictions = write_predictions(tmp_path / "p.csv", edit(rows), "csv")
    out = tmp_path / "out.txt"
    out.write_text("kept\n")
    with pytest.raises(SubmissionError) as raised:
        submission.make_submission(predictions, str(out), published.data_dir, "validation",
                                   devkit=published.kit.path)
    assert message.format(*names) in str(raised.value)
    assert out.read_text() == "kept\n"
    assert [p for p in os.listdir(tmp_path) if p.endswith(submission.PARTIAL_SUFFIX)] == []


def test_a_refusal_on_the_command_line_is_one_line(published, tmp_path):
    rows = perfect_rows(published)
    predictions = write_predictions(tmp_path / "p.npz", rows[:-2], "npz")
    proc = run_cli("submission", f"--predictions={predictions}", f"--output={tmp_path / 'o'}",
                   f"--data_dir={published.data_dir}", "--split=validation",
                   f"--devkit={published.kit.path}", check=False)
    _refused(proc, "2 images without a prediction", rows[-2][0], rows[-1][0])


def test_unreadable_prediction_files_are_refused(published, tmp_path):
    bad = {
        "p.txt": (b"x", r"must be a \.csv"),
        "p.jsonl": (b'{"file_name": "a", "top5": [1,2,3,4,5]}\n{oops\n',
                    r"line 2 is not JSON"),
        "q.jsonl": (b'["ILSVRC2012_val_00000001.JPEG", [1, 2, 3, 4, 5]]\n',
                    r"line 1 is not an object with a file_name"),
    }
    for name, (data, message) in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SubmissionError, match=message):
            submission.read_predictions(str(tmp_path / name))
    np.savez(tmp_path / "no_top5.npz", file_name=np.array(["a"]))
    with pytest.raises(SubmissionError, match="has no `top5` array"):
        submission.read_predictions(str(tmp_path / "no_top5.npz"))
    np.savez(tmp_path / "objects.npz", file_name=np.array(["a"], dtype=object),
             top5=np.zeros((1, 5), dtype=int))
    with pytest.raises(SubmissionError, match="not an .npz of plain arrays"):
        submission.read_predictions(str(tmp_path / "objects.npz"))
    np.savez(tmp_path / "shape.npz", file_name=np.array(["a", "b"]),
             top5=np.zeros((2, 4), dtype=int))
    rows = submission.read_predictions(str(tmp_path / "shape.npz"))
    assert [len(r.classes) for r in rows] == [4, 4]  # refused later as not five classes
    np.savez(tmp_path / "floats.npz", file_name=np.array(["a"]), top5=np.zeros((1, 5)))
    with pytest.raises(SubmissionError, match="holds float64 values"):
        submission.read_predictions(str(tmp_path / "floats.npz"))


def test_the_output_never_replaces_an_input_or_lands_in_the_dataset(published, tmp_path):
    predictions = write_predictions(tmp_path / "p.csv", perfect_rows(published), "csv")
    before = open(predictions, "rb").read()
    targets = {
        predictions: "is an input of this command",
        published.kit.path: "is an input of this command",
        os.path.join(version_dir(published.data_dir), "submission.txt"):
            "lies inside the published dataset",
        str(tmp_path / "no" / "such" / "out.txt"): "does not exist",
    }
    for output, message in targets.items():
        with pytest.raises(SubmissionError, match=message):
            submission.make_submission(predictions, output, published.data_dir, "validation",
                                       devkit=published.kit.path)
    assert open(predictions, "rb").read() == before
    assert "submission.txt" not in os.listdir(version_dir(published.data_dir))


def test_check_submission_refuses_misshapen_files(published, tmp_path):
    good = ["1 2 3 4 5"] * (NUM_TEST - 1)
    cases = {
        "short": (good, f"{NUM_TEST - 1} lines, one per image makes {NUM_TEST}"),
        "four ids": ([*good, "1 2 3 4"], "1 lines without exactly five class ids (first: "
                     "line 15"),
        "id 1001": ([*good, "1 2 3 4 1001"], "an id that is not a whole number in 1..1000"),
        "id 0": ([*good, "0 2 3 4 5"], "an id that is not a whole number in 1..1000"),
        "comma separated": ([*good, "1,2,3,4,5"], "without exactly five class ids"),
        "repeated": (["1 2 3 4 1", *good], "1 lines with a class twice (first: line 1"),
    }
    for case, (lines, message) in cases.items():
        path = tmp_path / f"{case}.txt"
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(SubmissionError, match=re.escape(message)):
            submission.check_submission(str(path), published.data_dir, "test")
    proc = run_cli("check-submission", str(tmp_path / "id 1001.txt"),
                   f"--data_dir={published.data_dir}", check=False)
    _refused(proc, "line 15: '1 2 3 4 1001'")


def test_score_refuses_the_test_split_and_a_missing_dataset(published, tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("1 2 3 4 5\n" * NUM_TEST)
    with pytest.raises(SubmissionError, match="only validation has labels"):
        submission.score(str(path), published.data_dir, "test")
    proc = run_cli("score", str(path), f"--data_dir={tmp_path}", check=False)
    _refused(proc, "holds no published imagenet2012 5.1.0")


def test_devkit_predictions_and_output_on_gcs(published, tmp_path, gcs_bucket):
    """The devkit, the predictions and the submission as gs:// objects (local GCS server);
    the score command reads the devkit from the bucket."""
    client = gcs_client()
    bucket = client.bucket(gcs_bucket[len("gs://"):])
    bucket.blob("manual/ILSVRC2012_devkit_t12.tar.gz").upload_from_filename(published.kit.path)
    rows = perfect_rows(published, as_wnids=True)
    local = write_predictions(tmp_path / "p.jsonl", rows, "jsonl")
    bucket.blob("predictions/p.jsonl").upload_from_filename(local)
    kit = f"{gcs_bucket}/manual/ILSVRC2012_devkit_t12.tar.gz"
    out = f"{gcs_bucket}/submissions/val.txt"
    written = submission.make_submission(f"{gcs_bucket}/predictions/p.jsonl", out,
                                         published.data_dir, "validation", devkit=kit)
    assert written.numbering == "devkit"
    names = sorted(b.name for b in client.list_blobs(bucket, prefix="submissions/"))
    assert names == ["submissions/val.txt"]  # the temporary object is gone
    local_copy = tmp_path / "val.txt"
    local_copy.write_bytes(bucket.blob("submissions/val.txt").download_as_bytes())
    assert read_lines(local_copy) == expected_devkit_lines(published, rows)
    scored = run_cli("score", str(local_copy), f"--data_dir={published.data_dir}",
                     f"--devkit={kit}")
    assert "top-1 error: 0.00%" in scored.stdout and kit in scored.stdout


def test_array_record_shards_give_the_same_split(tmp_path):
    """A version in ArrayRecord (read through its index, no TensorFlow): same file names and
    labels as the generator wrote."""
    manual = str(tmp_path / "manual")
    generated = synthetic.generate_manual_dir(manual, num_validation=6, splits=("validation",))
    convert(manual, tmp_path / "data", "--splits=validation", "--file_format=array_record")
    images = submission.published_split(str(tmp_path / "data"), "validation")
    truth = generated.by_name("validation")
    assert list(images.file_names) == sorted(truth)
    assert list(images.labels) == [truth[n].label for n in images.file_names]


def test_a_version_tfds_built_is_read_through_its_dataset_info(published, tmp_path):
    """No lineage.json (as `tfds build` leaves it): the shards are found through
    dataset_info.json; the version directory itself may be given as data_dir."""
    import shutil

    tfds_built = tmp_path / "imagenet2012" / "5.1.0"
    shutil.copytree(version_dir(published.data_dir), tfds_built)
    for name in ("lineage.json", "_COMPLETE"):
        os.remove(tfds_built / name)
    ours = submission.published_split(published.data_dir, "validation")
    for data_dir in (tmp_path, tfds_built):
        theirs = submission.published_split(str(data_dir), "validation")
        assert (theirs.file_names, theirs.labels) == (ours.file_names, ours.labels)
