"""Reading a published version back: does it hold what its lineage.json says?

Used after every conversion (the demo, the DAG's validation) and by users:
`python -m imagenet_beam verify DATA_DIR/imagenet2012/5.1.0`.
"""

from __future__ import annotations

import struct

from imagenet_beam import metadata, shards, storage


class VerificationError(ValueError):
    pass


def count_tfrecords(path: str) -> int:
    count = 0
    with storage.open_read(path) as f:
        while header := f.read(12):
            if len(header) < 12:
                raise VerificationError(f"{path} ends inside a record header")
            (length,) = struct.unpack("<Q", header[:8])
            f.seek(length + 4, 1)
            count += 1
    return count


def count_array_records(path: str) -> int:
    from array_record.python.array_record_module import ArrayRecordReader

    with storage.scratch_dir() as scratch:
        local = path
        if storage.is_remote(path):
            local = storage.join(scratch, storage.basename(path))
            with storage.open_read(path) as src, open(local, "wb") as dst:
                dst.write(src.read())
        reader = ArrayRecordReader(local)
        try:
            return reader.num_records()
        finally:
            reader.close()


def _decode_one_per_split(version_dir: str, file_format: str, splits: list[str]) -> dict:
    """Loads the version through TFDS and decodes the first image of every split."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(version_dir)
    decoded = {}
    for split in splits:
        if file_format == shards.ARRAY_RECORD:
            example = builder.as_data_source(split=split)[0]
            shape = tuple(example["image"].shape)
        else:
            example = next(iter(builder.as_dataset(split=split).take(1)))
            shape = tuple(example["image"].shape.as_list())
        if len(shape) != 3 or shape[-1] != 3:
            raise VerificationError(f"{split}: first image decodes to shape {shape}, not HxWx3")
        decoded[split] = {
            "num_examples": builder.info.splits[split].num_examples,
            "first_image_shape": list(shape),
        }
    return decoded


def verify_output(version_dir: str, decode: bool = True, checksums: bool = True) -> dict:
    """Checks every shard's size, sha256 and record count against lineage.json.

    checksums=False: sizes only (no read of the shards), for a quick up-to-date check.
    """
    record = metadata.read_lineage(version_dir)
    file_format = record["options"]["file_format"]
    counter = count_tfrecords if file_format == shards.TFRECORD else count_array_records
    problems, summary = [], {"version_dir": version_dir, "splits": {}}
    for split, info in record["splits"].items():
        total = 0
        for shard in info["shards"]:
            path = storage.join(version_dir, shard["file"])
            if not storage.exists(path):
                problems.append(f"{shard['file']} is missing")
                continue
            facts = [("bytes", shard["num_bytes"], storage.size(path))]
            if checksums:
                count = counter(path)
                facts += [
                    ("sha256", shard["sha256"], storage.sha256_of(path)),
                    ("examples", shard["num_examples"], count),
                ]
            else:
                count = shard["num_examples"]
            total += count
            for what, want, got in facts:
                if want != got:
                    problems.append(f"{shard['file']}: {what} {got}, lineage.json says {want}")
        if total != info["num_examples"]:
            problems.append(f"{split}: {total} examples, lineage.json says {info['num_examples']}")
        summary["splits"][split] = {
            "num_examples": total,
            "num_shards": len(info["shards"]),
            "num_bytes": info["num_bytes"],
        }
    if problems:
        raise VerificationError(f"{version_dir} does not match its lineage: " + "; ".join(problems))
    if decode:
        loaded = _decode_one_per_split(version_dir, file_format, sorted(record["splits"]))
        for split, facts in loaded.items():
            if facts["num_examples"] != summary["splits"][split]["num_examples"]:
                raise VerificationError(
                    f"TFDS sees {facts['num_examples']} {split} examples, "
                    f"the shards hold {summary['splits'][split]['num_examples']}"
                )
            summary["splits"][split]["first_image_shape"] = facts["first_image_shape"]
    summary["fixed_images"] = len(record["fixed_images"])
    summary["skipped_images"] = len(record["skipped_images"])
    return summary
