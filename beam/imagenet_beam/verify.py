"""Reading a published version back: does it hold what its lineage.json says?

Used after every conversion (the command line, the DAG's `validate_and_record`), on the
staged shards before a publication makes them visible (`read_back_staged`: the DAG's
publish), by the up-to-date check, and by users:
`python -m imagenet_beam verify DATA_DIR/imagenet2012/5.1.0`.
("Decoding every image" while converting is a setting, `decode_images`; this reads the
published output.)
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable

from imagenet_beam import formats, layout, metadata, publish, storage
from imagenet_beam.formats import schemas, tfds_schema, tfrecord_index
from imagenet_beam.layout import COMPLETE_MARKER, LINEAGE_FILE
from imagenet_beam.metadata import Lineage, ShardLineage


class VerificationError(ValueError):
    pass


def _local_copy_for_decoding(
    version_dir: str, record: Lineage, scratch: str, shards: bool = True
) -> str:
    """A local directory TFDS can open in place of a remote version: its metadata files and
    the first shard of every split (enough to decode each split's first example; with
    shards=False the metadata alone, enough for its builder's info).

    TensorFlow's own GCS client always talks to storage.googleapis.com; going through ours
    keeps one way of reaching gs:// (and so works against a local GCS server too).
    """
    local = os.path.join(scratch, "version")
    os.makedirs(local)
    names = [
        storage.basename(path)
        for path in storage.list_files(version_dir)
        if not layout.is_shard_file(storage.basename(path))
    ]
    if shards:
        names += [info.shards[0].file for info in record.splits.values() if info.shards]
    for name in names:
        with storage.open_read(storage.join(version_dir, name)) as src, open(
            os.path.join(local, name), "wb"
        ) as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
    return local


def _decode_one_per_split(version_dir: str, record: Lineage) -> dict:
    """Loads the version through TFDS and decodes the first image of every split."""
    import tensorflow_datasets as tfds

    shard_format = formats.get(record.options["file_format"])
    with storage.scratch_dir() as scratch:
        if storage.is_remote(version_dir):
            version_dir = _local_copy_for_decoding(version_dir, record, scratch)
        builder = tfds.builder_from_directory(version_dir)
        decoded = {}
        for split in sorted(record.splits):
            shape = tuple(shard_format.first_example(builder, split)["image"].shape)
            if len(shape) != 3 or shape[-1] != 3:
                raise VerificationError(
                    f"{split}: first image decodes to shape {shape}, not HxWx3"
                )
            decoded[split] = {
                "num_examples": builder.info.splits[split].num_examples,
                "first_image_shape": list(shape),
            }
    return decoded


def _first_images(version_dir: str, record: Lineage) -> dict[str, bytes]:
    """Per split (sorted), the image of its first record, read by offset and parsed as a
    tf.train.Example without TensorFlow."""
    schema = schemas.for_record(record.options)
    shard_format = formats.get(record.options["file_format"])
    images = {}
    for split, info in sorted(record.splits.items()):
        first = storage.join(version_dir, info.shards[0].file)
        example = tfds_schema.parse_example(shard_format.read_records(first, [0], {0: 0})[0])
        images[split], _, _ = schema.fields(example)
    return images


def _decode_first_records(version_dir: str, record: Lineage) -> dict:
    """Without TFDS metadata (the classic schema): the first record of every split
    (`_first_images`), its image decoded by TensorFlow."""
    import tensorflow as tf

    return {
        split: {"num_examples": record.splits[split].num_examples,
                "first_image_shape": list(tf.io.decode_jpeg(image, channels=3).shape)}
        for split, image in _first_images(version_dir, record).items()
    }


def _decode_without_tensorflow(version_dir: str, record: Lineage) -> dict:
    """The decoding check without TensorFlow's import (seconds): TFDS's builder reads the
    metadata (its features, splits and shard lengths, against lineage.json's), then the
    first record of every split, read by offset, is parsed and its image decoded (Pillow)."""
    import io

    from PIL import Image

    if schemas.for_record(record.options).tfds_metadata:
        import tensorflow_datasets as tfds

        with storage.scratch_dir() as scratch:
            local = version_dir
            if storage.is_remote(version_dir):
                local = _local_copy_for_decoding(version_dir, record, scratch, shards=False)
            splits = tfds.builder_from_directory(local).info.splits
        for split, info in record.splits.items():
            seen = splits[split] if split in splits else None
            lengths = [shard.num_examples for shard in info.shards]
            if seen is None or list(seen.shard_lengths) != lengths:
                raise VerificationError(
                    f"TFDS sees {split} as {list(seen.shard_lengths) if seen else 'missing'}"
                    f" examples a shard, lineage.json says {lengths}"
                )
    decoded = {}
    for split, image in _first_images(version_dir, record).items():
        try:
            with Image.open(io.BytesIO(image)) as opened:
                width, height = opened.convert("RGB").size
        except (OSError, ValueError) as e:
            raise VerificationError(f"{split}: first image does not decode ({e})") from None
        decoded[split] = {"num_examples": record.splits[split].num_examples,
                          "first_image_shape": [height, width, 3]}
    return decoded


def published_lineage(version_dir: str) -> Lineage:
    """lineage.json of a version whose publication finished, else a VerificationError."""
    if not publish.is_published(version_dir):
        raise VerificationError(
            f"{version_dir} has no {COMPLETE_MARKER} marker: its publication did not "
            "finish (or it was not made by imagenet_beam). Run the conversion again; it "
            "replaces what is there."
        )
    marker = publish.read_completion_marker(version_dir)
    text = storage.read_bytes(storage.join(version_dir, LINEAGE_FILE))
    if hashlib.sha256(text).hexdigest() != marker["lineage_sha256"]:
        raise VerificationError(
            f"{version_dir}: {LINEAGE_FILE} is not the one its "
            f"{COMPLETE_MARKER} marker was written for; convert again"
        )
    missing = [
        name for name in sorted(marker["files"])
        if not storage.exists(storage.join(version_dir, name))
    ]
    if missing:
        raise VerificationError(
            f"{version_dir} lacks files it was published with: {', '.join(missing[:10])}"
            + (" …" if len(missing) > 10 else "") + "; convert again"
        )
    return metadata.read_lineage(version_dir)


def _index_problems(version_dir: str, shard: ShardLineage, checksums: bool) -> list[str]:
    """DALI's index beside a shard (`--tfrecord_index`): its size, and with checksums its
    sha256 and that its lines are the shard's records (from the index: see
    `tfrecord_index.index_problems`)."""
    index = shard.index_file
    path = storage.join(version_dir, index["file"])
    if not storage.exists(path):
        return [f"{index['file']} is missing"]
    if not checksums:
        size = storage.size(path)
        return [] if size == index["num_bytes"] else [
            f"{index['file']}: bytes {size}, lineage.json says {index['num_bytes']}"
        ]
    data = storage.read_bytes(path)
    problems = [
        f"{index['file']}: {what} {got}, lineage.json says {want}"
        for what, want, got in (
            ("bytes", index["num_bytes"], len(data)),
            ("sha256", index["sha256"], hashlib.sha256(data).hexdigest()),
        )
        if want != got
    ]
    return problems + [
        f"{index['file']}: {problem}"
        for problem in tfrecord_index.index_problems(data, shard.num_examples, shard.num_bytes)
    ]


def _shard_problems(
    version_dir: str, shard: ShardLineage, shard_format, checksums: bool
) -> tuple[int, list[str]]:
    """(its record count, what differs from lineage) for one shard (and its DALI index)."""
    path = storage.join(version_dir, shard.file)
    if not storage.exists(path):
        return 0, [f"{shard.file} is missing"]
    facts = [("bytes", shard.num_bytes, storage.size(path))]
    unreadable = []
    count = shard.num_examples
    if checksums:
        try:
            count, sha256 = shard_format.count_and_hash(path)
            facts += [("sha256", shard.sha256, sha256), ("examples", shard.num_examples, count)]
        except ValueError as e:  # its framing is broken: no count
            count, unreadable = 0, [f"{shard.file}: {e}"]
    problems = [
        f"{shard.file}: {what} {got}, lineage.json says {want}"
        for what, want, got in facts if want != got
    ] + unreadable
    if shard.index_file:
        problems += _index_problems(version_dir, shard, checksums)
    return count, problems


def shards_against_lineage(
    version_dir: str, record: Lineage, checksums: bool = True
) -> tuple[dict[str, int], list[str]]:
    """Every shard of `record` in `version_dir` (and its DALI index) against it: (the
    records counted per split, what differs). checksums=False: sizes only."""
    shard_format = formats.get(record.options["file_format"])
    shards = [(split, shard) for split, info in record.splits.items() for shard in info.shards]

    def check(shard: ShardLineage) -> tuple[int, list[str]]:
        return _shard_problems(version_dir, shard, shard_format, checksums)

    # The shards side by side (a thread each, a few per core: each is a read at disk speed
    # and a sha256, which releases the GIL), the problems in lineage order.
    workers = max(1, min(len(shards), 2 * (os.cpu_count() or 1)))
    with concurrent.futures.ThreadPoolExecutor(workers, "verify") as pool:
        checked = list(pool.map(check, [shard for _, shard in shards]))
    totals: dict[str, int] = dict.fromkeys(record.splits, 0)
    problems: list[str] = []
    for (split, _), (count, found) in zip(shards, checked, strict=True):
        totals[split] += count
        problems += found
    problems += [
        f"{split}: {totals[split]} examples, lineage.json says {info.num_examples}"
        for split, info in record.splits.items() if totals[split] != info.num_examples
    ]
    return totals, problems


def read_back_staged(staging_dir: str, record: Lineage) -> None:
    """The staged shards read back and hashed against the lineage about to be published
    (`run.publish(read_back=True)`: beside its metadata and report, before anything is
    visible); a VerificationError saying what differs."""
    _, problems = shards_against_lineage(staging_dir, record, checksums=True)
    if problems:
        raise VerificationError(
            f"the shards staged in {staging_dir} do not read back as they were written: "
            + "; ".join(problems) + ". Nothing was published; check the output's disk "
            "and convert again"
        )


_READ_BACK_FAILED = 3  # the read-back process's exit status when a shard differs


def read_back_in_a_process(staging_dir: str) -> Callable[[], None]:
    """Starts `read_back_staged` against the lineage.json written into the local
    `staging_dir`, in a process of its own beside the caller: its many reads and hashes
    then wait for no GIL that the caller's charts hold (in a thread they took 1.5x as long,
    and the charts twice). Returns what waits for it (raising its VerificationError)."""
    code = ("import sys\nfrom imagenet_beam import verify\n"
            "sys.exit(verify.read_back_main(sys.argv[1]))")
    proc = subprocess.Popen([sys.executable, "-c", code, staging_dir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait() -> None:
        _, err = proc.communicate()
        if proc.returncode == _READ_BACK_FAILED:
            raise VerificationError(err.strip())
        if proc.returncode != 0:
            raise VerificationError(
                f"reading back {staging_dir} failed (exit status {proc.returncode}): "
                f"{err.strip()[-2000:]}; nothing was published"
            )

    return wait


def read_back_main(staging_dir: str) -> int:
    """`read_back_in_a_process`'s process: exit status 0, or _READ_BACK_FAILED with the error."""
    try:
        read_back_staged(staging_dir, metadata.read_lineage(staging_dir))
    except VerificationError as e:
        print(e, file=sys.stderr)
        return _READ_BACK_FAILED
    return 0


def verify_output(
    version_dir: str, decode: bool = True, checksums: bool = True, tensorflow: bool = True
) -> dict:
    """Checks every shard's size, sha256 and record count against lineage.json (and its
    DALI index, where it has one), then decodes the first image of every split.

    checksums=False: sizes only (no read of the shards), for a quick up-to-date check.
    tensorflow=False: the decoding without TensorFlow (`_decode_without_tensorflow`; the
    DAG's, whose task would otherwise spend most of its time importing it).
    A version without its completion marker (a publication that did not finish) fails.
    """
    record = published_lineage(version_dir)
    summary = {"version_dir": version_dir, "splits": {}}
    totals, problems = shards_against_lineage(version_dir, record, checksums)
    for split, info in record.splits.items():
        summary["splits"][split] = {
            "num_examples": totals[split],
            "num_shards": len(info.shards),
            "num_bytes": info.num_bytes,
        }
    if problems:
        raise VerificationError(f"{version_dir} does not match its lineage: " + "; ".join(problems))
    if decode:
        if not tensorflow:
            loaded = _decode_without_tensorflow(version_dir, record)
        elif schemas.for_record(record.options).tfds_metadata:
            loaded = _decode_one_per_split(version_dir, record)
        else:
            loaded = _decode_first_records(version_dir, record)
        for split, facts in loaded.items():
            if facts["num_examples"] != summary["splits"][split]["num_examples"]:
                raise VerificationError(
                    f"TFDS sees {facts['num_examples']} {split} examples, "
                    f"the shards hold {summary['splits'][split]['num_examples']}"
                )
            summary["splits"][split]["first_image_shape"] = facts["first_image_shape"]
    summary["fixed_images"] = len(record.fixed_images)
    summary["skipped_images"] = len(record.skipped_images)
    return summary
