"""The ILSVRC devkit read in place (`sources/devkit.py`), and the generator's stand-in for
it (`synthetic_devkit.py`): numbering, the validation ground truth, and every refusal."""

from __future__ import annotations

import gzip
import io
import os
import tarfile

import numpy as np
import pytest
import scipy.io

from imagenet_beam import dataset, synthetic, synthetic_devkit
from imagenet_beam.sources import devkit
from imagenet_beam.sources.devkit import DevkitError, read_devkit
from imagenet_beam.synthetic_devkit import DEVKIT_ROOT, devkit_bytes, devkit_members
from tests.conftest import gcs_client, run_cli

META = f"{DEVKIT_ROOT}/{devkit.META_MAT}"
TRUTH = f"{DEVKIT_ROOT}/{devkit.GROUND_TRUTH}"


@pytest.fixture(scope="module")
def members():
    return dict(devkit_members())


@pytest.fixture(scope="module")
def kit_path(tmp_path_factory):
    return synthetic_devkit.write_devkit(str(tmp_path_factory.mktemp("devkit")))


def _write(tmp_path, members: dict[str, bytes], name="ILSVRC2012_devkit_t12.tar.gz") -> str:
    path = tmp_path / name
    path.write_bytes(devkit_bytes(members.items()))
    return str(path)


def test_devkit_numbering_is_the_real_ones_not_tfds(kit_path):
    kit = read_devkit(kit_path.path)
    assert len(kit.synsets) == 1000 + synthetic_devkit.NUM_ANCESTORS
    # The two facts of the numbering trap: devkit id 1 is kit fox, TFDS's label 0 tench.
    assert kit.wnid(1) == "n02119789" and dataset.class_names()[0] == "n01440764"
    assert kit.devkit_id("n01751748") == 490 and dataset.class_index()["n01751748"] == 65
    assert kit.validation_ground_truth[:4] == (490, 361, 171, 822)
    assert [s.wnid for s in kit.leaves] != list(dataset.class_names())
    assert sorted(s.wnid for s in kit.leaves) == list(dataset.class_names())
    for label in range(dataset.NUM_CLASSES):
        assert kit.tfds_label(kit.devkit_id_of_label(label)) == label
    assert all(s.is_leaf for s in kit.leaves)
    root = kit.synset(1001)
    assert root.num_children == len(root.children) > 0 and root.wordnet_height == 2
    assert not kit.synset(root.children[0]).is_leaf


def test_ground_truth_agrees_with_tfds_validation_labels(kit_path):
    kit = read_devkit(kit_path.path)
    assert len(kit.validation_ground_truth) == 50_000
    assert kit.validation_disagreements() == []
    for number in (1, 2, 777, 50_000):
        name = f"ILSVRC2012_val_{number:08d}.JPEG"
        assert kit.validation_label(number) == dataset.validation_label(name)
        assert kit.validation_wnid(number) == dataset.validation_wnids()[number - 1]
        kit.check_validation_label(name, dataset.validation_label(name))


def test_a_disagreeing_ground_truth_names_the_image(tmp_path):
    path = synthetic_devkit.write_devkit(str(tmp_path), wrong_ground_truth=[3, 41]).path
    kit = read_devkit(path)
    assert kit.validation_disagreements() == [3, 41]
    name = "ILSVRC2012_val_00000003.JPEG"
    with pytest.raises(DevkitError, match=r"ILSVRC2012_val_00000003\.JPEG is labelled"):
        kit.check_validation_label(name, dataset.validation_label(name))


def test_train_counts_come_from_the_generated_input(tmp_path):
    generated = synthetic.generate_manual_dir(
        str(tmp_path / "manual"), num_classes=3, train_per_class=2, splits=("train",)
    )
    kit = read_devkit(synthetic_devkit.write_devkit(generated.manual_dir, generated=generated).path)
    counts = {}
    for m in generated.split("train"):
        counts[m.label] = counts.get(m.label, 0) + 1
    assert kit.train_count_differences(counts) == []
    one = next(iter(counts))
    assert kit.train_count_differences({**counts, one: 1}) == [
        (dataset.class_names()[one], 1, 2)
    ]
    assert kit.words_by_label()[one] == f"synthetic class {dataset.class_names()[one]}"


def test_meta_mat_has_the_real_struct_layout(members):
    """One `synsets` struct array, a row per synset, the eight fields in the real order,
    numbers as 1x1 doubles, children a 1xN row."""
    mat = scipy.io.loadmat(io.BytesIO(members[META]))
    synsets = mat["synsets"]
    assert synsets.shape == (1000 + synthetic_devkit.NUM_ANCESTORS, 1)
    assert synsets.dtype.names == devkit.SYNSET_FIELDS
    first = synsets[0][0]
    assert first["ILSVRC2012_ID"].shape == (1, 1) and first["ILSVRC2012_ID"].dtype == np.float64
    assert first["WNID"][0] == "n02119789"
    root = synsets[1000][0]
    assert root["children"].shape == (1, synthetic_devkit.NUM_ANCESTORS - 1)


def test_generated_devkit_is_deterministic(tmp_path):
    a = synthetic_devkit.write_devkit(str(tmp_path / "a")).path
    b = synthetic_devkit.write_devkit(str(tmp_path / "b")).path
    assert open(a, "rb").read() == open(b, "rb").read()
    c = synthetic_devkit.write_devkit(str(tmp_path / "c"), seed=1)
    assert c.wnids[0] == "n02119789" and c.wnids != synthetic_devkit.devkit_order(0)


def test_generate_cli_writes_the_devkit(tmp_path):
    proc = run_cli("generate", f"--manual_dir={tmp_path}", "--splits=validation", "--devkit")
    assert "ILSVRC2012_devkit_t12.tar.gz: 1000 classes" in proc.stdout
    kit = read_devkit(str(tmp_path / dataset.DEVKIT_ARCHIVE))
    assert kit.wnid(1) == "n02119789"
    refused = run_cli("generate", f"--manual_dir={tmp_path}", "--layout=kaggle", "--devkit",
                      check=False)
    assert refused.returncode == 2 and "tarballs layout" in refused.stderr


def test_devkit_read_from_gcs(kit_path, gcs_bucket):
    bucket = gcs_client().bucket(gcs_bucket[len("gs://"):])
    bucket.blob("manual/ILSVRC2012_devkit_t12.tar.gz").upload_from_filename(kit_path.path)
    assert devkit.devkit_path(f"{gcs_bucket}/manual") == (
        f"{gcs_bucket}/manual/ILSVRC2012_devkit_t12.tar.gz")
    assert devkit.devkit_path(f"{gcs_bucket}/elsewhere") is None
    kit = read_devkit(f"{gcs_bucket}/manual/ILSVRC2012_devkit_t12.tar.gz")
    assert kit.wnid(1) == "n02119789" and kit.validation_ground_truth[0] == 490


def _mat(synsets) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": synsets})
    return buf.getvalue()


def _synsets_with(members, change) -> bytes:
    synsets = scipy.io.loadmat(io.BytesIO(members[META]))["synsets"]
    change(synsets)
    return _mat(synsets)


def _set_wnid(row: int, wnid: str):
    def change(synsets):
        synsets[row, 0]["WNID"] = np.array([wnid])
    return change


def _set_id(row: int, value: int):
    def change(synsets):
        synsets[row, 0]["ILSVRC2012_ID"] = np.array([[float(value)]])
    return change


def _give_child(row: int):
    def change(synsets):
        synsets[row, 0]["num_children"] = np.array([[1.0]])
        synsets[row, 0]["children"] = np.array([[5.0]])
    return change


BAD_MEMBERS = {
    "no meta.mat": (lambda m: {k: v for k, v in m.items() if k != META},
                    r"not the ILSVRC 2012 devkit: it has no data/meta\.mat"),
    "no ground truth": (lambda m: {k: v for k, v in m.items() if k != TRUTH},
                        r"has no data/ILSVRC2012_validation_ground_truth\.txt"),
    "meta.mat not a mat": (lambda m: {**m, META: b"<html>not found</html>" * 20},
                           r"is not the devkit's meta\.mat"),
    "meta.mat other variable": (
        lambda m: {**m, META: (lambda b: (scipy.io.savemat(b, {"x": np.zeros(3)}), b)[1])(
            io.BytesIO()).getvalue()},
        r"has no `synsets` struct array"),
    "too few synsets": (
        lambda m: {**m, META: _mat(scipy.io.loadmat(io.BytesIO(m[META]))["synsets"][:999])},
        r"`synsets` has 999 entries"),
    "a wnid not a class": (lambda m: {**m, META: _synsets_with(m, _set_wnid(4, "n99999999"))},
                           r"'n99999999' \(id 5\) is not one of the 1000"),
    "a repeated id": (lambda m: {**m, META: _synsets_with(m, _set_id(4, 4))},
                      r"ILSVRC2012_IDs are not 1\.\.1009, one each"),
    "a leaf with children": (lambda m: {**m, META: _synsets_with(m, _give_child(2))},
                             r"id 3 has children"),
    "ground truth short": (
        lambda m: {**m, TRUTH: b"".join(m[TRUTH].splitlines(keepends=True)[:49_999])},
        r"has 49,999 lines, one per validation image makes 50,000"),
    "ground truth out of range": (lambda m: {**m, TRUTH: b"1001\n" + m[TRUTH]},
                                  r"line 1 is '1001', not a class id in 1\.\.1000"),
    "ground truth too big": (lambda m: {**m, TRUTH: m[TRUTH] + b" " * (2 << 20)},
                             r"more than the 2,097,152 a devkit's has"),
    "meta.mat outside data/": (
        lambda m: {**{k: v for k, v in m.items() if k != META}, "../data/meta.mat": m[META]},
        r"it has no data/meta\.mat"),
    "meta.mat deeper": (
        lambda m: {**{k: v for k, v in m.items() if k != META}, "a/b/data/meta.mat": m[META]},
        r"it has no data/meta\.mat"),
}


@pytest.mark.parametrize("case", sorted(BAD_MEMBERS))
def test_a_file_that_is_not_the_devkit_is_refused(case, members, tmp_path):
    change, message = BAD_MEMBERS[case]
    path = _write(tmp_path, change(dict(members)))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(DevkitError, match=message) as raised:
        read_devkit(path)
    assert "\n" not in str(raised.value) and "ILSVRC2012_devkit_t12.tar.gz" in str(raised.value)
    assert sorted(os.listdir(tmp_path)) == before  # nothing extracted


def _tar_gz(add) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        add(tar)
    return buf.getvalue()


def _symlinked_meta(tar):
    info = tarfile.TarInfo(META)
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    tar.addfile(info)


def _twice(members):
    def add(tar):
        for name in (META, META, TRUTH):
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))
    return add


def test_damaged_archives_are_refused(members, tmp_path):
    cases = {
        "plain.tar.gz": (b"not gzip at all" * 10, r"is not a gzipped tar \(\.tar\.gz\)"),
        "gzip-not-tar.tar.gz": (gzip.compress(b"x" * 5000, mtime=0), r"is not a complete tar"),
        "cut.tar.gz": (devkit_bytes(members.items())[:20_000], r"not a complete tar|ends inside"),
        "symlink.tar.gz": (_tar_gz(_symlinked_meta), r"data/meta\.mat is not a regular file"),
        "twice.tar.gz": (_tar_gz(_twice(members)), r"holds data/meta\.mat twice"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DevkitError, match=message):
            read_devkit(str(path))
    with pytest.raises(DevkitError, match=r"does not exist"):
        read_devkit(str(tmp_path / "absent.tar.gz"))


def test_a_gzip_bomb_stops_at_the_unpacked_limit(members, tmp_path, monkeypatch):
    """Past MAX_UNPACKED_BYTES of tar (256 MiB; lowered here to keep the test small) the
    read stops, though each member is within its own limit or not wanted at all."""
    monkeypatch.setattr(devkit, "MAX_UNPACKED_BYTES", 1 << 20)

    def add(tar):
        info = tarfile.TarInfo(f"{DEVKIT_ROOT}/evaluation/padding.bin")
        info.size = 2 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))

    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(_tar_gz(add))
    with pytest.raises(DevkitError, match=r"unpacks to more than 1 MiB"):
        read_devkit(str(path))


def test_a_row_shaped_synsets_array_reads_the_same(members, tmp_path):
    """The reader flattens `synsets` whichever way round it is stored (1860x1 or 1x1860)."""
    synsets = scipy.io.loadmat(io.BytesIO(members[META]))["synsets"]
    path = _write(tmp_path, {**members, META: _mat(synsets.T)})
    kit = read_devkit(path)
    assert kit.synsets == read_devkit(_write(tmp_path, members, "same.tar.gz")).synsets
