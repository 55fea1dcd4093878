"""Shard writing on its own: each broken member is refused or skipped, never written."""

from __future__ import annotations

import pytest

from imagenet_beam import dataset, plan, shards, sources, synthetic
from imagenet_beam.settings import ON_CORRUPT_FAIL, ON_CORRUPT_POLICIES, Settings
from imagenet_beam.sources import tarballs


@pytest.mark.parametrize("kind", synthetic.BROKEN_KINDS)
@pytest.mark.parametrize("policy", ON_CORRUPT_POLICIES)
def test_each_broken_kind_fails_or_is_skipped(kind, policy, tmp_path):
    generated = synthetic.generate_manual_dir(
        str(tmp_path / "manual"), num_classes=2, train_per_class=2, splits=("train",),
        broken=(kind,),
    )
    archive = f"{generated.manual_dir}/{dataset.TRAIN_ARCHIVE}"
    refs = [
        ref
        for inner in tarballs.list_inner_tars(archive)
        for ref in tarballs.index_inner_tar(archive, inner)
    ]
    [spec] = plan.plan_split("train", refs, num_shards=1)
    [bad] = [m for m in generated.members if m.kind == kind]
    settings = Settings.from_mapping(
        {"manual_dir": generated.manual_dir, "data_dir": str(tmp_path / "out"),
         "on_corrupt": policy}
    )
    source = sources.get()

    if policy == ON_CORRUPT_FAIL:
        with pytest.raises(shards.CorruptMemberError) as error:
            list(shards.encode_shard(spec, settings, source, shards.MemberNotes()))
        message = str(error.value)
        assert bad.file_name in message and dataset.TRAIN_ARCHIVE in message
        assert "--on_corrupt=skip" in message
    else:
        notes = shards.MemberNotes()
        records = list(shards.encode_shard(spec, settings, source, notes))
        assert [s["file_name"] for s in notes.skipped] == [bad.file_name]
        assert notes.skipped[0]["reason"]
        assert len(records) == len(refs) - 1


def test_writers_keep_freed_member_memory_on_glibc():
    """glibc (this machine, Dataflow's workers) takes the malloc settings; elsewhere it is
    a no-op that says so."""
    import platform

    assert shards.keep_freed_memory() == (platform.libc_ver()[0] == "glibc")
