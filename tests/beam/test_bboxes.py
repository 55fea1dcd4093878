"""The ILSVRC 2012 bounding-box archives read in place (`sources/bboxes.py`), and the
generator's stand-ins for them (`synthetic_bboxes.py`): boxes relative and clamped, per
group, cached; orphans listed; hostile or damaged archives refused."""

from __future__ import annotations

import io
import os
import tarfile
import time

import pytest

from imagenet_beam import dataset, synthetic, synthetic_bboxes
from imagenet_beam.sources import bboxes
from imagenet_beam.sources.bboxes import Box, BoxError, load_boxes, orphans, prepare_boxes
from imagenet_beam.synthetic_bboxes import annotation_xml
from imagenet_beam.synthetic_layouts import tar_gz_bytes
from tests.conftest import gcs_client, run_cli

TRAIN, VALIDATION = dataset.TRAIN, dataset.VALIDATION
WNID_A, WNID_B = dataset.class_names()[0], dataset.class_names()[1]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    manual = str(tmp_path_factory.mktemp("manual"))
    images = synthetic.generate_manual_dir(
        manual, num_classes=3, train_per_class=5, num_validation=8, splits=[TRAIN, VALIDATION]
    )
    return images, synthetic_bboxes.write_bboxes(manual, images)


@pytest.fixture(scope="module")
def prepared(generated, tmp_path_factory):
    _, written = generated
    out = str(tmp_path_factory.mktemp("work") / "boxes")
    return prepare_boxes(written.paths[TRAIN], written.paths[VALIDATION], out)


def _all_boxes(summary, split) -> dict[str, tuple[Box, ...]]:
    found = {}
    for group in summary.groups_of(split):
        found.update(load_boxes(summary.out_dir, group))
    return found


def _xml(stem: str, wnid: str = WNID_A, corners=((1, 2, 30, 40),), size=(64, 48)) -> bytes:
    return annotation_xml(stem, wnid, wnid, size, corners)


def _archive(tmp_path, entries, name=dataset.BBOX_TRAIN_ARCHIVE) -> str:
    path = tmp_path / name
    path.write_bytes(tar_gz_bytes(entries))
    return str(path)


def _files_below(directory) -> set[str]:
    return {
        os.path.relpath(os.path.join(root, f), directory)
        for root, _, files in os.walk(directory) for f in files
    }


def test_boxes_are_the_generated_ones_relative_and_clamped(generated, prepared):
    _, written = generated
    for split in (TRAIN, VALIDATION):
        assert _all_boxes(prepared, split) == written.expected[split]
        counts = prepared.splits[split]
        assert counts.xml_files == len(written.expected[split])
        assert counts.boxes == written.num_boxes(split)
        assert counts.images_with_boxes == len(written.expected[split])
        assert counts.clamped_boxes == written.clamped[split]
    boxes = [b for split in (TRAIN, VALIDATION) for bs in written.expected[split].values()
             for b in bs]
    assert all(0 <= b.xmin <= b.xmax <= 1 and 0 <= b.ymin <= b.ymax <= 1 for b in boxes)
    # the generator's awkward corners all occur: several objects, clamped, fractional
    assert prepared.splits[TRAIN].clamped_boxes > 0
    assert any(len(bs) > 1 for bs in written.expected[TRAIN].values())
    assert any(b.xmin in (0.0, 1.0) or b.ymax == 1.0 for b in boxes)


def test_a_train_group_holds_only_its_class(generated, prepared):
    images, written = generated
    wnids = sorted({dataset.class_names()[m.label] for m in images.split(TRAIN)})
    assert prepared.groups_of(TRAIN) == wnids
    assert prepared.groups_of(VALIDATION) == [bboxes.VALIDATION_GROUP]
    for wnid in wnids:
        loaded = load_boxes(prepared.out_dir, wnid)
        assert loaded and all(name.startswith(f"{wnid}_") for name in loaded)
        assert all(box.wnid == wnid for bs in loaded.values() for box in bs)
        assert bboxes.group_of(TRAIN, next(iter(loaded))) == wnid
        assert prepared.groups[wnid] == len(loaded)
    # a class without annotations has an empty group, no error
    absent = next(w for w in dataset.class_names() if w not in wnids)
    assert load_boxes(prepared.out_dir, absent) == {}


def test_a_subset_of_train_and_most_of_validation_are_annotated(generated):
    images, written = generated
    for split in (TRAIN, VALIDATION):
        existing = {m.file_name for m in images.split(split)}
        annotated = set(written.expected[split]) - set(written.orphans[split])
        assert annotated < existing
        if split == VALIDATION:
            assert len(annotated) == len(existing) - 1


def test_xml_files_for_images_that_do_not_exist_are_listed(generated, prepared):
    images, written = generated
    for split in (TRAIN, VALIDATION):
        existing = {m.file_name for m in images.split(split)}
        found = orphans(prepared, split, existing)
        assert [o.file_name for o in found] == list(written.orphans[split])
        assert all(o.reason == bboxes.NO_SUCH_IMAGE for o in found)
        assert found[0].archive == dataset.BBOX_ARCHIVES[split]
        assert found[0].member.endswith(found[0].file_name.replace(".JPEG", ".xml"))
    # with every name existing, none is an orphan
    assert orphans(prepared, TRAIN, set(written.expected[TRAIN])) == []


def test_name_comes_from_the_xml_file_not_its_filename_field(generated):
    _, written = generated
    with tarfile.open(written.paths[TRAIN]) as tar:
        first = next(m for m in tar.getmembers() if m.isfile())
        assert b"<filename>%s</filename>" in tar.extractfile(first).read()
    name = os.path.basename(first.name).replace(".xml", ".JPEG")
    assert name in written.expected[TRAIN]


def test_prepared_once_per_archive_state(generated, tmp_path):
    _, written = generated
    out = str(tmp_path / "work")
    first = prepare_boxes(written.paths[TRAIN], written.paths[VALIDATION], out)
    again = prepare_boxes(written.paths[TRAIN], written.paths[VALIDATION], out)
    assert not first.cached and again.cached and again.to_dict() == first.to_dict()
    # another validation archive: read again, and no group of the train archive is left
    other = tmp_path / "other"
    images = synthetic.generate_manual_dir(str(other), num_validation=5, splits=[VALIDATION],
                                           seed=1)
    val = synthetic_bboxes.write_bboxes(str(other), images, seed=1)
    changed = prepare_boxes(None, val.paths[VALIDATION], out)
    assert not changed.cached and list(changed.splits) == [VALIDATION]
    assert _files_below(out) == {"bboxes.json", "bboxes-validation.json"}
    assert _all_boxes(changed, VALIDATION) == val.expected[VALIDATION]
    assert load_boxes(out, WNID_A) == {}


def test_class_archives_inside_the_train_archive(generated, tmp_path):
    images, _ = generated
    written = synthetic_bboxes.write_bboxes(str(tmp_path), images, class_archives=True)
    with tarfile.open(written.paths[TRAIN]) as tar:
        assert all(n.endswith(".tar.gz") for n in tar.getnames())
    summary = prepare_boxes(written.paths[TRAIN], None, str(tmp_path / "work"))
    assert _all_boxes(summary, TRAIN) == written.expected[TRAIN]
    found = orphans(summary, TRAIN, {m.file_name for m in images.split(TRAIN)})
    assert [o.member.split("/")[0] for o in found] == [f"{found[0].file_name[:9]}.tar.gz"]


def test_classes_in_any_order_and_xml_files_not_used(tmp_path):
    link = tarfile.TarInfo(f"{WNID_A}/{WNID_A}_9.xml")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        entries = [
            (f"{WNID_A}/{WNID_A}_1.xml", _xml(f"{WNID_A}_1", corners=((1, 2, 3, 4),))),
            (f"{WNID_B}/{WNID_B}_1.xml", _xml(f"{WNID_B}_1", WNID_B)),
            (f"{WNID_A}/{WNID_A}_2.xml", _xml(f"{WNID_A}_2", corners=())),
            (f"other/{WNID_A}_1.xml", _xml(f"{WNID_A}_1", corners=((5, 5, 6, 6),))),
            ("readme.xml", _xml("readme")),
            ("n99999999/n99999999_1.xml", _xml("n99999999_1")),
            (f"{WNID_A}/{WNID_A}_3.JPEG", b"not an annotation"),
        ]
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.addfile(link)
    path = tmp_path / dataset.BBOX_TRAIN_ARCHIVE
    path.write_bytes(buf.getvalue())
    summary = prepare_boxes(str(path), None, str(tmp_path / "work"))
    a = load_boxes(summary.out_dir, WNID_A)
    assert a == {
        f"{WNID_A}_1.JPEG": (Box(1 / 64, 2 / 48, 3 / 64, 4 / 48, WNID_A),),
        f"{WNID_A}_2.JPEG": (),
    }
    assert list(load_boxes(summary.out_dir, WNID_B)) == [f"{WNID_B}_1.JPEG"]
    counts = summary.splits[TRAIN]
    assert (counts.xml_files, counts.boxes, counts.images_with_boxes) == (3, 2, 2)
    reasons = {o.member: o.reason for o in orphans(summary, TRAIN, set())
               if o.reason != bboxes.NO_SUCH_IMAGE}
    assert reasons == {
        "readme.xml": bboxes.NOT_AN_IMAGE_NAME.format(split=TRAIN),
        "n99999999/n99999999_1.xml": bboxes.NOT_AN_IMAGE_NAME.format(split=TRAIN),
        f"other/{WNID_A}_1.xml": bboxes.DUPLICATE,
        f"{WNID_A}/{WNID_A}_9.xml": bboxes.NOT_REGULAR,
    }


def test_members_with_unsafe_paths_are_not_written_anywhere(tmp_path):
    root = tmp_path / "deep" / "deeper"
    root.mkdir(parents=True)
    unsafe = [f"../../escaped/{WNID_A}_1.xml", f"/tmp/absolute-{os.getpid()}/{WNID_A}_2.xml",
              f"{WNID_A}/../../../{WNID_A}_3.xml"]
    entries = [(name, _xml(os.path.basename(name)[:-4])) for name in unsafe]
    entries.append((f"{WNID_A}/{WNID_A}_4.xml", _xml(f"{WNID_A}_4")))
    path = _archive(root, entries)
    with tarfile.open(path) as tar:
        assert tar.getnames()[:3] == unsafe  # the archive really holds these names
    before = _files_below(tmp_path)
    summary = prepare_boxes(path, None, str(root / "work"))
    assert _files_below(tmp_path) - before == {
        "deep/deeper/work/bboxes.json", f"deep/deeper/work/bboxes-{WNID_A}.json"}
    assert not os.path.exists(f"/tmp/absolute-{os.getpid()}")
    assert list(load_boxes(summary.out_dir, WNID_A)) == [f"{WNID_A}_4.JPEG"]
    assert {o.member: o.reason for o in summary.ignored} == dict.fromkeys(
        unsafe, bboxes.UNSAFE_PATH)


BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE annotation [\n <!ENTITY lol "lol">\n'
    + b"".join(
        b' <!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]>\n<annotation><folder>&lol9;</folder></annotation>\n"
)


def _external_entity(target: str) -> bytes:
    return (
        b'<?xml version="1.0"?>\n<!DOCTYPE annotation [<!ENTITY secret SYSTEM "file://'
        + target.encode() + b'">]>\n<annotation><folder>&secret;</folder><size><width>1'
        b"</width><height>1</height></size></annotation>\n"
    )


@pytest.mark.parametrize("hostile", ["billion_laughs", "external_entity"])
def test_entity_tricks_are_refused_quickly(tmp_path, hostile):
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret contents")
    data = BILLION_LAUGHS if hostile == "billion_laughs" else _external_entity(str(secret))
    member = f"{WNID_A}/{WNID_A}_2.xml"
    path = _archive(tmp_path, [(f"{WNID_A}/{WNID_A}_1.xml", _xml(f"{WNID_A}_1")), (member, data)])
    out = tmp_path / "work"
    started = time.perf_counter()
    with pytest.raises(BoxError) as refused:
        prepare_boxes(path, None, str(out))
    assert time.perf_counter() - started < 2
    message = str(refused.value)
    assert path in message and member in message and "DTD" in message
    assert "secret contents" not in message
    assert not (out / bboxes.SUMMARY_FILE).exists()  # nothing looks prepared
    with pytest.raises(BoxError, match="run prepare_boxes first"):
        load_boxes(str(out), WNID_A)


def test_an_entity_without_a_dtd_is_not_expanded(tmp_path):
    data = b"<annotation><folder>&lol;</folder></annotation>"
    with pytest.raises(BoxError, match="not well-formed XML.*undefined entity"):
        bboxes.parse_annotation(data, "archive: member.xml")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"<annotation><size><width>10", "not well-formed XML"),
        (b"<voc/>", "not <annotation>"),
        (b"<annotation><object/></annotation>", "size/width"),
        (b"<annotation><size><width>0</width><height>5</height></size></annotation>",
         "image size is 0x5"),
        (_xml("x", corners=(("left", 1, 2, 3),)), "object 1: <bndbox>: <xmin> is 'left'"),
        (_xml("x", corners=(("nan", 1, 2, 3),)), "not a number"),
    ],
)
def test_malformed_annotations_name_archive_and_member(tmp_path, data, problem):
    member = f"{WNID_A}/{WNID_A}_7.xml"
    path = _archive(tmp_path, [(member, data)])
    with pytest.raises(BoxError, match=problem) as refused:
        prepare_boxes(path, None, str(tmp_path / "work"))
    assert f"{path}: {member}" in str(refused.value)


def test_an_oversized_xml_file_is_refused_unread(tmp_path):
    big = _xml(f"{WNID_A}_1").replace(b"</annotation>", b" " * bboxes.MAX_XML_BYTES
                                      + b"</annotation>")
    path = _archive(tmp_path, [(f"{WNID_A}/{WNID_A}_1.xml", big)])
    with pytest.raises(BoxError, match="more than the 1,048,576 an annotation"):
        prepare_boxes(path, None, str(tmp_path / "work"))


def test_damaged_archives_give_clear_errors(generated, tmp_path):
    _, written = generated
    with open(written.paths[VALIDATION], "rb") as f:
        whole = f.read()
    cases = {
        "cut.tgz": whole[: len(whole) // 2],
        "garbled.tgz": whole[:20] + bytes(b ^ 0x5A for b in whole[20:]),
        "text.tgz": b"<html>404 Not Found</html>\n",
        "empty.tgz": b"",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BoxError) as refused:
            prepare_boxes(None, str(tmp_path / name), str(tmp_path / "work"))
        message = str(refused.value)
        assert str(tmp_path / name) in message and "download it again" in message, message
    with pytest.raises(BoxError, match="does not exist"):
        prepare_boxes(str(tmp_path / "absent.tar.gz"), None, str(tmp_path / "work"))


def test_the_other_archive_in_the_wrong_place(generated, tmp_path):
    _, written = generated
    others = len(written.expected[VALIDATION])
    with pytest.raises(BoxError, match=rf"no annotation of a train image .* \(it has {others} "
                       r"other XML files\): is it the ILSVRC2012_bbox_train_v2.tar.gz"):
        prepare_boxes(written.paths[VALIDATION], None, str(tmp_path / "work"))


def test_group_names_never_become_paths(prepared):
    for bad in ("../bboxes", "/etc/passwd", "n0144076", "train"):
        with pytest.raises(ValueError, match="not a box group"):
            load_boxes(prepared.out_dir, bad)


def test_generate_cli_writes_the_box_archives(tmp_path):
    proc = run_cli("generate", f"--manual_dir={tmp_path}", "--splits=train,validation",
                   "--bboxes")
    for name in dataset.BBOX_ARCHIVES.values():
        assert (tmp_path / name).is_file() and name in proc.stdout
    assert bboxes.archive_paths(str(tmp_path)) == {
        split: str(tmp_path / name) for split, name in dataset.BBOX_ARCHIVES.items()}
    refused = run_cli("generate", f"--manual_dir={tmp_path}", "--layout=imagefolder",
                      "--bboxes", check=False)
    assert refused.returncode == 2 and "tarballs layout" in refused.stderr


def test_generated_archives_are_deterministic(generated, tmp_path):
    images, written = generated
    again = synthetic_bboxes.write_bboxes(str(tmp_path), images)
    for split, path in written.paths.items():
        with open(path, "rb") as a, open(again.paths[split], "rb") as b:
            assert a.read() == b.read()


def test_archives_and_work_dir_on_gcs(generated, gcs_bucket):
    _, written = generated
    bucket = gcs_client().bucket(gcs_bucket[len("gs://"):])
    for name, path in zip(dataset.BBOX_ARCHIVES.values(), written.paths.values(), strict=True):
        bucket.blob(f"manual/{name}").upload_from_filename(path)
    found = bboxes.archive_paths(f"{gcs_bucket}/manual")
    assert sorted(found) == [TRAIN, VALIDATION]
    out = f"{gcs_bucket}/work/boxes"
    summary = prepare_boxes(found[TRAIN], found[VALIDATION], out)
    for split in (TRAIN, VALIDATION):
        assert _all_boxes(summary, split) == written.expected[split]
    assert prepare_boxes(found[TRAIN], found[VALIDATION], out).cached
