"""The classic TensorFlow ImageNet schema: what the TPU ResNet, the TF Model Garden and
MLPerf's ResNet reference read.

The converters they were written for (tensorflow/models' research/inception
build_imagenet_data.py, tensorflow/tpu's tools/datasets/imagenet_to_gcs.py) write one
`tf.train.Example` per image with these features:

    image/channels            int64   3
    image/class/label         int64   1..1000: TFDS's label + 1 (0 is "background")
    image/class/synset        bytes   the wnid
    image/class/text          bytes   the devkit's `words` for the class, else the wnid
    image/colorspace          bytes   RGB
    image/encoded             bytes   the JPEG (CMYK and PNG members re-encoded, as for TFDS)
    image/filename            bytes   n01440764_10026.JPEG, ILSVRC2012_val_00000001.JPEG
    image/format              bytes   JPEG
    image/height, image/width int64   of the stored image, read from the image itself
    image/object/bbox/xmin, ymin, xmax, ymax   float   boxes relative to the image, in [0, 1]
    image/object/bbox/label   int64   per box, the image's class/label (as the inception script)

The entries are written in that (sorted) order, so a re-run gives the same bytes. Files are
`train-00000-of-01024` and `validation-00000-of-00128` (fewer when a split has fewer
images; --num_shards overrides); examples are in TFDS's key order (md5 of split and file
name), a fixed order that mixes classes, which the classic converters got from a shuffle.
"""

from __future__ import annotations

from imagenet_beam import dataset, layout
from imagenet_beam.formats import tfds_schema
from imagenet_beam.formats.base import Schema

CLASSIC_SHARDS = {dataset.TRAIN: 1024, dataset.VALIDATION: 128}
TEXT_FROM_DEVKIT = "devkit words"
TEXT_FROM_WNID = "wnid"

_CHANNELS = tfds_schema.int64_entry("image/channels", [3])
_COLORSPACE = tfds_schema.bytes_entry("image/colorspace", b"RGB")
_FORMAT = tfds_schema.bytes_entry("image/format", b"JPEG")
BOX_KEYS = tuple(f"image/object/bbox/{k}" for k in ("xmax", "xmin", "ymax", "ymin"))


class ClassicSchema(Schema):
    """See the module docstring. texts: per TFDS label, the class text; boxes_dirs: split →
    its `sources.bboxes` directory prepared for this run (splits without a box archive
    have none: their images get empty box lists)."""

    tfds_metadata = False  # its readers glob the shards; lineage.json says the rest

    def __init__(
        self,
        output: layout.Output = layout.CLASSIC,
        texts: tuple[str, ...] | None = None,
        text_from: str = TEXT_FROM_WNID,
        boxes_dirs: dict[str, str] | None = None,
    ):
        self.output = output
        self.texts = texts
        self.text_from = text_from
        self.boxes_dirs = dict(boxes_dirs or {})

    def optional_files(self, splits):
        return [dataset.BBOX_ARCHIVES[s] for s in splits if s in dataset.BBOX_ARCHIVES]

    def configured(self, settings) -> ClassicSchema:
        """With the devkit's class names when manual_dir has the devkit, and each requested
        split's boxes when it has the split's box archive (read once into the work dir,
        kept for re-runs)."""
        from imagenet_beam.sources import bboxes, devkit

        boxes_dirs = {}
        for split in settings.splits:
            summary = bboxes.prepare_split(settings.manual_dir, settings.data_dir, split)
            if summary is not None:
                boxes_dirs[split] = summary.out_dir
        path = devkit.devkit_path(settings.manual_dir)
        if path is None:
            return ClassicSchema(self.output, None, TEXT_FROM_WNID, boxes_dirs)
        words = tuple(devkit.read_devkit(path).words_by_label())
        return ClassicSchema(self.output, words, TEXT_FROM_DEVKIT, boxes_dirs)

    def default_num_shards(self, split, num_images):
        return min(CLASSIC_SHARDS.get(split, 1), max(num_images, 1))

    def select(self, split, refs):
        if split not in self.boxes_dirs or not refs:
            return refs
        from imagenet_beam.sources import bboxes

        out = []
        for group, group_refs in _by_box_group(split, refs).items():
            boxes = bboxes.load_boxes(self.boxes_dirs[split], group)
            out += [
                r._replace(extra=[list(b[:4]) for b in boxes.get(r.file_name, ())])
                for r in group_refs
            ]
        return out

    def example_parts(self, ref, image):
        wnid = dataset.class_names()[ref.label]
        text = self.texts[ref.label] if self.texts else wnid
        width, height = image.size
        boxes = ref.extra or []
        before = [
            _CHANNELS,
            tfds_schema.int64_entry("image/class/label", [ref.label + 1]),
            tfds_schema.bytes_entry("image/class/synset", wnid.encode("utf-8")),
            tfds_schema.bytes_entry("image/class/text", text.encode("utf-8")),
            _COLORSPACE,
        ]
        after = [
            tfds_schema.bytes_entry("image/filename", ref.file_name.encode("utf-8")),
            _FORMAT,
            tfds_schema.int64_entry("image/height", [height]),
            tfds_schema.int64_entry("image/object/bbox/label", [ref.label + 1] * len(boxes)),
            # sorted keys: xmax, xmin, ymax, ymin; a box is (xmin, ymin, xmax, ymax)
            tfds_schema.float_entry(BOX_KEYS[0], [b[2] for b in boxes]),
            tfds_schema.float_entry(BOX_KEYS[1], [b[0] for b in boxes]),
            tfds_schema.float_entry(BOX_KEYS[2], [b[3] for b in boxes]),
            tfds_schema.float_entry(BOX_KEYS[3], [b[1] for b in boxes]),
            tfds_schema.int64_entry("image/width", [width]),
        ]
        return tfds_schema.pieces(before, "image/encoded", image.data, after)

    def fields(self, example):
        label = example.get("image/class/label")
        return (
            example.get("image/encoded", b""),
            example.get("image/filename", b"").decode("utf-8", "replace"),
            None if label is None else label - 1,
        )


def _by_box_group(split: str, refs: list) -> dict[str, list]:
    """Members by the boxes file that holds theirs (`bboxes.group_of`): a train class's,
    or validation's."""
    from imagenet_beam.sources import bboxes

    groups: dict[str, list] = {}
    for ref in refs:
        groups.setdefault(bboxes.group_of(split, ref.file_name), []).append(ref)
    return groups
