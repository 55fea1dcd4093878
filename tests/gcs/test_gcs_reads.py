"""Reads from gs:// archives fetch about the bytes asked for, not Beam's 16 MiB blocks."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from imagenet_beam import sources, storage
from imagenet_beam.sources import tarballs
from imagenet_beam.sources.tar import ArchiveError, walk_tar
from tests.conftest import gcs_client
from tests.gcs.stalling_proxy import StallingProxy

MEMBER = 100_000
PADDING = 3_000_000


@pytest.fixture
def through_proxy(gcs_server, monkeypatch):
    """Our storage layer talking to the GCS server through a byte-counting proxy."""
    with StallingProxy(gcs_server) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        monkeypatch.setattr(storage, "_GCSIO", None)  # a client for the proxy's address
        yield proxy
    storage._GCSIO = None


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_scattered_members_cost_about_their_own_bytes(gcs_bucket, through_proxy):
    members = []
    for i in range(12):
        members.append((f"img_{i:02d}.JPEG", bytes([i]) * MEMBER))
        members.append((f"filler_{i:02d}.bin", b"\0" * PADDING))
    path = storage.join(gcs_bucket, "val.tar")
    gcs_client().bucket(gcs_bucket[5:]).blob("val.tar").upload_from_string(_tar(members))
    refs = [
        sources.MemberRef("validation", path, entry.offset, entry.size, entry.name, 0)
        for entry in walk_tar(storage.open_read(path), path)
        if entry.name.startswith("img_")
    ]
    wanted = refs[::2]  # every other image: 6 MB apart

    through_proxy.bytes_sent = 0
    got = dict(sources.get().read_members(path, list(reversed(wanted))))
    assert {ref.file_name: data for ref, data in got.items()} == {
        ref.file_name: bytes([int(ref.file_name[4:6])]) * MEMBER for ref in wanted
    }
    asked = len(wanted) * MEMBER
    assert asked <= through_proxy.bytes_sent < 1.2 * asked


def test_nearby_members_share_a_request(gcs_bucket, through_proxy):
    members = [(f"img_{i:03d}.JPEG", bytes([i]) * 5_000) for i in range(60)]
    path = storage.join(gcs_bucket, "test.tar")
    gcs_client().bucket(gcs_bucket[5:]).blob("test.tar").upload_from_string(_tar(members))
    refs = [
        sources.MemberRef("test", path, e.offset, e.size, e.name, -1)
        for e in walk_tar(storage.open_read(path), path)
    ]
    through_proxy.requests = 0
    got = list(sources.get().read_members(path, refs))
    assert [data for _, data in got] == [bytes([i]) * 5_000 for i in range(60)]
    assert through_proxy.requests <= 3


def test_listing_the_train_tar_reads_headers_not_classes(gcs_bucket, through_proxy):
    classes = [(f"n{i:08d}.tar", os.urandom(2_000_000)) for i in range(8)]
    path = storage.join(gcs_bucket, "ILSVRC2012_img_train.tar")
    data = _tar(classes)
    gcs_client().bucket(gcs_bucket[5:]).blob("ILSVRC2012_img_train.tar").upload_from_string(data)

    through_proxy.bytes_sent = 0
    inner = tarballs.list_inner_tars(path)
    assert [e.name for e in inner] == [name for name, _ in classes]
    assert through_proxy.bytes_sent < len(data) / 10


def test_members_past_the_end_of_a_truncated_object_are_reported(gcs_bucket, through_proxy):
    data = _tar([("a.JPEG", b"a" * 5_000), ("b.JPEG", b"b" * 5_000)])
    path = storage.join(gcs_bucket, "cut.tar")
    entries = list(walk_tar(io.BytesIO(data), path))
    gcs_client().bucket(gcs_bucket[5:]).blob("cut.tar").upload_from_string(data[:2_000])
    refs = [sources.MemberRef("test", path, e.offset, e.size, e.name, -1) for e in entries]
    for wanted in (refs[:1], refs[1:]):  # ends inside the member; starts past the end
        with pytest.raises(ArchiveError, match="ends inside member"):
            list(sources.get().read_members(path, wanted))
