"""report.html and report.png: a published version at a glance.

Per split: sample images (evenly spaced through the split, read by offset), examples per
class, file sizes and image dimensions; then every fixed or skipped image with its reason,
and the archives with their checksums. Cheap by construction: the counts are lineage.json's
(counted while converting, see `stats`), or dataset_info.json's for a version TFDS built;
only the sampled and the fixed images are read.

`python -m imagenet_beam report VERSION_DIR [--output=DIR]`; every publication writes one.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import html
import io
import json
import statistics
from collections.abc import Sequence
from typing import Any

from imagenet_beam import dataset, formats, layout, metadata, publish, settings, stats, storage
from imagenet_beam.formats import schemas, tfds_schema
from imagenet_beam.layout import DATASET_INFO_FILE, REPORT_HTML, REPORT_PNG

SAMPLES_PER_SPLIT = 16  # in the page; the picture shows the first PNG_SAMPLES of them
PNG_SAMPLES = 12
THUMBNAIL_SIDE = 128
NOTED_THUMBNAILS = 200  # fixed/skipped images shown as pictures; the rest are listed
PNG_DPI = 80


class ReportError(ValueError):
    """What cannot be reported on: not a published version."""


@dataclasses.dataclass
class Picture:
    """One image of the report: a sample, or a fixed or skipped member."""

    split: str
    file_name: str
    label: int | None
    thumbnail: Any = None  # a PIL image, None when it does not decode / cannot be read
    size: tuple[int, int] | None = None
    num_bytes: int | None = None
    reason: str | None = None

    @property
    def caption(self) -> str:
        return class_caption(self.label)


@dataclasses.dataclass
class SplitView:
    name: str
    num_examples: int
    num_bytes: int
    shards: list[tuple[str, int]]  # (file, examples)
    stats: stats.ImageStats
    stats_from_samples: bool  # True: no recorded counts (TFDS's build), only the samples'
    samples: list[Picture] = dataclasses.field(default_factory=list)

    @property
    def class_counts(self) -> list[int] | None:
        """Examples per class id, None where the split has no labels or none are recorded."""
        if self.stats_from_samples or not any(k >= 0 for k in self.stats.labels):
            return None
        return [self.stats.labels.get(i, 0) for i in range(dataset.NUM_CLASSES)]


@dataclasses.dataclass
class VersionView:
    version_dir: str
    made_by: str
    file_format: str
    splits: list[SplitView]
    fixed: list[Picture]
    skipped: list[Picture]
    archives: list[dict]
    options: dict
    warnings: list[str]
    classes: dict | None = None  # lineage's `classes` (with the devkit)
    title: str = f"{dataset.DATASET_NAME} {dataset.VERSION}"  # the dataset and its version
    boxes: dict | None = None  # lineage's `boxes` (classic schema with box archives)

    @property
    def schema(self):
        """The example schema its records are in (`formats.schemas`)."""
        return schemas.for_record(self.options)


def class_caption(label: int | None) -> str:
    """Class id and wnid (the project has no class names: TFDS ships wnids only, and the
    devkit's names are optional input)."""
    if label is None:
        return "—"  # not read (a skipped member)
    if label < 0:
        return "no label"
    wnids = dataset.class_names()
    return f"{label} · {wnids[label]}" if label < len(wnids) else str(label)


# --- what the version holds ------------------------------------------------------------


def _from_lineage(version_dir: str, record: metadata.Lineage) -> VersionView:
    splits = [
        SplitView(
            name,
            info.num_examples,
            info.num_bytes,
            [(s.file, s.num_examples) for s in info.shards],
            stats.ImageStats.from_dict(info.stats),
            stats_from_samples=not info.stats,
        )
        for name, info in sorted(
            record.splits.items(), key=lambda kv: dataset.SPLITS.index(kv[0])
        )
    ]

    def noted(f: dict) -> Picture:
        return Picture(f["split"], f["file_name"], None, reason=f["reason"])

    return VersionView(
        version_dir,
        "imagenet_beam",
        record.options.get("file_format", settings.TFRECORD),
        splits,
        [noted(f) for f in record.fixed_images],
        [noted(f) for f in record.skipped_images],
        list(record.archives),
        dict(record.options),
        list(record.warnings),
        record.classes,
        f"{record.dataset} {record.version}",
        record.boxes,
    )


def _from_dataset_info(version_dir: str) -> VersionView:
    """A version TFDS wrote itself: its split facts are dataset_info.json's."""
    info = json.loads(storage.read_bytes(storage.join(version_dir, DATASET_INFO_FILE)))
    file_format = info.get("fileFormat") or settings.TFRECORD
    splits = []
    for split in info.get("splits", []):
        lengths = [int(n) for n in split.get("shardLengths", [])]
        files = [
            layout.shard_file_name(split["name"], file_format, i, len(lengths))
            for i in range(len(lengths))
        ]
        splits.append(
            SplitView(
                split["name"], sum(lengths), int(split.get("numBytes", 0)),
                list(zip(files, lengths, strict=True)), stats.ImageStats(),
                stats_from_samples=True,
            )
        )
    splits.sort(key=lambda s: dataset.SPLITS.index(s.name) if s.name in dataset.SPLITS else 9)
    return VersionView(version_dir, "TFDS (no lineage.json)", file_format, splits,
                       [], [], [], {}, [])


def published_lineage(version_dir: str) -> metadata.Lineage | None:
    """The lineage of a version of ours, None for one TFDS built; else a ReportError."""
    existing = publish.existing_version(version_dir)
    if existing == "published":
        from imagenet_beam import verify

        try:
            return verify.published_lineage(version_dir)
        except verify.VerificationError as e:
            raise ReportError(str(e)) from None
    if existing == "foreign":
        return None
    raise ReportError(
        f"{version_dir} is not a published version: it has neither a "
        f"{layout.COMPLETE_MARKER} marker nor TFDS's {DATASET_INFO_FILE}. Give a version "
        f"directory such as DATA_DIR/{dataset.DATASET_NAME}/{dataset.VERSION}."
    )


# --- reading the pictures ---------------------------------------------------------------


def _thumbnail(data: bytes, truncated_ok: bool = False) -> tuple[Any, tuple[int, int] | None]:
    from PIL import Image, ImageFile

    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
    try:
        image = Image.open(io.BytesIO(data))
        size = image.size
        image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))  # libjpeg scales while decoding
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        return image, size
    except Exception:  # a skipped member is broken by definition
        return None, None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _picture(split: str, record: bytes, schema, reason: str | None = None) -> Picture:
    data, name, label = schema.fields(tfds_schema.parse_example(record))
    thumbnail, size = _thumbnail(data)
    return Picture(split, name, label, thumbnail, size, len(data), reason)


def sample_positions(num_examples: int, count: int) -> list[int]:
    """`count` evenly spaced positions in 0..num_examples-1 (the middle of equal parts)."""
    count = min(count, num_examples)
    return sorted({(2 * k + 1) * num_examples // (2 * count) for k in range(count)})


def _read(
    version_dir: str, file_format: str, wanted: dict[str, list[int]],
    offsets: dict[str, dict[int, int]],
) -> dict:
    """{(shard, index): record} for the wanted positions of each shard (offsets: the byte
    offsets of some, per shard)."""
    shard_format = formats.get(file_format)
    out = {}
    for shard, indices in wanted.items():
        indices = sorted(set(indices))
        path = storage.join(version_dir, shard)
        for index, record in zip(
            indices, shard_format.read_records(path, indices, offsets.get(shard)),
            strict=True,
        ):
            out[(shard, index)] = record
    return out


def sample_spots(shards: list[tuple[str, int]], count: int) -> list[tuple[str, int]]:
    """(shard, position) of each sample. With at least as many shards as samples: the first
    record of evenly spaced shards, read at offset 0 with no walk through the shard (one
    ranged read on GCS; examples are in hashed-key order, so these are as good as any).
    Otherwise the samples shared out among the shards as evenly as their records allow,
    each shard's from its start: the records before a sample are walked to reach it
    (a header read each), and a shard of 100,000 small images walked to its middle costs
    more than the rest of the report."""
    filled = [(name, n) for name, n in shards if n > 0]
    if len(filled) >= count:
        return [(filled[i][0], 0) for i in sample_positions(len(filled), count)]
    taken = [0] * len(filled)
    left = min(count, sum(n for _, n in filled))
    while left:
        for i, (_, n) in enumerate(filled):
            if left and taken[i] < n:
                taken[i] += 1
                left -= 1
    return [(name, index) for (name, _), k in zip(filled, taken, strict=True)
            for index in range(k)]


def load_pictures(version_dir: str, view: VersionView, record: metadata.Lineage | None):
    """Reads each split's samples and each fixed member (at its recorded shard and
    position) from the shards, and each skipped one from its archive where it still is."""
    where = {split.name: sample_spots(split.shards, SAMPLES_PER_SPLIT) for split in view.splits}
    wanted: dict[str, list[int]] = {}
    for spots in where.values():
        for shard, index in spots:
            wanted.setdefault(shard, []).append(index)
    fixed_spots, offsets = [], {}
    notes = record.fixed_images if record is not None else []
    for note in notes[:NOTED_THUMBNAILS]:
        if "shard" in note and "index" in note:
            fixed_spots.append((note["shard"], note["index"]))
            wanted.setdefault(note["shard"], []).append(note["index"])
            if "shard_offset" in note:
                offsets.setdefault(note["shard"], {})[note["index"]] = note["shard_offset"]
        else:
            fixed_spots.append(None)  # a lineage written before positions were recorded
    records = _read(version_dir, view.file_format, wanted, offsets)
    for split in view.splits:
        split.samples = [
            _picture(split.name, records[spot], view.schema) for spot in where[split.name]
        ]
        if split.stats_from_samples:
            split.stats = stats.ImageStats()
            for p in split.samples:
                split.stats.add(p.label if p.label is not None else -1, p.num_bytes or 0, p.size)
    for picture, spot in zip(view.fixed, fixed_spots, strict=False):
        if spot is not None:
            read = _picture(picture.split, records[spot], view.schema, picture.reason)
            picture.label, picture.thumbnail, picture.size = read.label, read.thumbnail, read.size
            picture.num_bytes = read.num_bytes
    if record is not None:
        _load_skipped(view, record)


def _load_skipped(view: VersionView, record: metadata.Lineage) -> None:
    """A skipped member is not in the shards: its bytes are read from its archive when that
    is still where the conversion read it (it may not decode at all: it was skipped)."""
    paths = [a.get("path") for a in record.archives] + [i.get("path") for i in
                                                        record.inputs.values()]
    by_name = {storage.basename(p): p for p in paths if p}
    for picture, note in list(zip(view.skipped, record.skipped_images, strict=True))[
        :NOTED_THUMBNAILS
    ]:
        path = by_name.get(note.get("archive", ""))
        if path is None or "offset" not in note:
            continue
        try:
            if not storage.exists(path):
                continue
            [data] = storage.read_ranges(path, [(note["offset"], note["size"])])
        except (OSError, ValueError):
            continue
        picture.thumbnail, picture.size = _thumbnail(data, truncated_ok=True)
        picture.num_bytes = len(data)


# --- charts -----------------------------------------------------------------------------


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def class_summary(split: SplitView) -> str:
    counts = split.class_counts
    if counts is None:
        if split.stats_from_samples:
            return "examples per class: not recorded (TFDS's own build, or an older lineage.json)"
        return "no labels (ImageNet's test split is unlabelled)"
    empty = sum(1 for c in counts if c == 0)
    return (
        f"per class: min {min(counts)}, median {statistics.median(counts):g}, "
        f"max {max(counts)}; {empty} of {len(counts)} classes without images"
    )


def _plain_log_ticks(axis) -> None:
    """1, 2, 5, 10, 20… as plain numbers; no minor ticks (each tick is an artist to lay
    out, and a log axis has dozens)."""
    from matplotlib.ticker import LogLocator, NullLocator, StrMethodFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.set_minor_locator(NullLocator())


def _draw_classes(ax, split: SplitView) -> None:
    counts = split.class_counts
    ax.set_title(class_summary(split), fontsize=10, loc="left")
    if counts is None:
        ax.set_axis_off()
        return
    ax.stairs(counts, range(len(counts) + 1), fill=True, color="#4c72b0")
    empty = [i + 0.5 for i, c in enumerate(counts) if c == 0]
    if empty:
        ax.plot(empty, [0] * len(empty), "|", color="#c44e52", markersize=5,
                label="class without images", clip_on=False)
        ax.legend(loc="upper right", fontsize=7, frameon=False)
    ax.set_xlim(0, len(counts))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("class id", fontsize=9)
    ax.set_ylabel("examples", fontsize=9)


def _contiguous(counter, key=lambda k: k) -> tuple[list[int], list[int]]:
    bins = sorted({key(k) for k in counter})
    span = list(range(bins[0], bins[-1] + 1))
    return span, [sum(v for k, v in counter.items() if key(k) == b) for b in span]


def _binned_median(counter) -> float:
    total, seen = sum(counter.values()), 0
    for b in sorted(counter):
        seen += counter[b]
        if 2 * seen >= total:
            lo, hi = stats.bin_edges(b)
            return (lo * hi) ** 0.5
    return 0.0


def _source_note(split: SplitView) -> str:
    return f" ({len(split.samples)} samples)" if split.stats_from_samples else ""


def _draw_file_sizes(ax, split: SplitView) -> None:
    counter = split.stats.file_bytes
    if not counter:
        ax.set_title("file sizes: none", fontsize=10, loc="left")
        ax.set_axis_off()
        return
    span, values = _contiguous(counter)
    edges = [stats.bin_edges(b)[0] / 1024 for b in span] + [stats.bin_edges(span[-1])[1] / 1024]
    ax.stairs(values, edges, fill=True, color="#55a868")
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_title(f"file sizes{_source_note(split)}: median ≈ "
                 f"{_human_bytes(_binned_median(counter))}", fontsize=10, loc="left")
    ax.set_xlabel("KiB", fontsize=9)
    ax.set_ylabel("images", fontsize=9)


def _draw_image_sizes(ax, split: SplitView) -> None:
    import numpy as np
    from matplotlib.colors import LogNorm

    counter = split.stats.image_sizes
    if not counter:
        ax.set_title("image sizes: none", fontsize=10, loc="left")
        ax.set_axis_off()
        return
    wspan, _ = _contiguous(counter, key=lambda k: k[0])
    hspan, _ = _contiguous(counter, key=lambda k: k[1])
    grid = np.zeros((len(hspan), len(wspan)))
    for (w, h), v in counter.items():
        grid[h - hspan[0], w - wspan[0]] = v
    xedges = [stats.bin_edges(b)[0] for b in wspan] + [stats.bin_edges(wspan[-1])[1]]
    yedges = [stats.bin_edges(b)[0] for b in hspan] + [stats.bin_edges(hspan[-1])[1]]
    mesh = ax.pcolormesh(xedges, yedges, np.ma.masked_equal(grid, 0), cmap="viridis",
                         norm=LogNorm(vmin=1, vmax=max(grid.max(), 1)))
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax.xaxis)
    _plain_log_ticks(ax.yaxis)
    (w, h), _ = max(counter.items(), key=lambda kv: kv[1])
    (wl, wh), (hl, hh) = stats.bin_edges(w), stats.bin_edges(h)
    ax.set_title(f"image sizes{_source_note(split)}: most {wl:.0f}–{wh:.0f} × "
                 f"{hl:.0f}–{hh:.0f} px", fontsize=10, loc="left")
    ax.set_xlabel("width (px)", fontsize=9)
    ax.set_ylabel("height (px)", fontsize=9)
    bar = ax.figure.colorbar(mesh, ax=ax, pad=0.02)
    bar.ax.tick_params(labelsize=7)
    _plain_log_ticks(bar.ax.yaxis)
    bar.set_label("images", fontsize=9)


CHART_SIZE = (15, 3.0)  # inches, at PNG_DPI


def split_charts(split: SplitView) -> bytes:
    """The split's three charts side by side, as a PNG (in the page and in the picture).

    A fixed layout, not matplotlib's constrained one: that measures every tick label
    again and costs several times the drawing itself."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=CHART_SIZE, dpi=PNG_DPI)
    grid = fig.add_gridspec(1, 3, width_ratios=[5, 3, 3.6], left=0.04, right=0.99,
                            bottom=0.17, top=0.88, wspace=0.22)
    for column, draw in enumerate((_draw_classes, _draw_file_sizes, _draw_image_sizes)):
        ax = fig.add_subplot(grid[0, column])
        ax.tick_params(labelsize=8)
        draw(ax, split)
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


# --- the picture ------------------------------------------------------------------------

TILE = 112  # a thumbnail's cell in report.png
BACKGROUND, INK, ALERT = (255, 255, 255), (34, 34, 34), (196, 78, 82)


@functools.cache
def _font(size: int):
    """DejaVu Sans, the charts' own font (matplotlib ships it)."""
    import os

    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(
        os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), size
    )


def _mosaic(pictures: list[tuple[Picture, list[str]]], columns: int, width: int):
    """Thumbnails in a grid, each with its caption lines below it."""
    from PIL import Image, ImageDraw

    font = _font(11)
    lines = max((len(c) for _, c in pictures), default=0)
    cell_w, cell_h = width // max(columns, 1), TILE + 4 + 13 * lines + 6
    rows = -(-len(pictures) // columns) if pictures else 0
    sheet = Image.new("RGB", (width, max(rows * cell_h, 1)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, (picture, caption) in enumerate(pictures):
        x, y = (i % columns) * cell_w, (i // columns) * cell_h
        if picture.thumbnail is not None:
            thumb = _fit_tile(picture.thumbnail)
            sheet.paste(thumb, (x + (cell_w - thumb.width) // 2, y + (TILE - thumb.height)))
        else:
            draw.rectangle((x + (cell_w - TILE) // 2, y, x + (cell_w + TILE) // 2, y + TILE),
                           outline=ALERT)
            draw.text((x + cell_w // 2, y + TILE // 2), "does not decode", fill=ALERT,
                      font=font, anchor="mm")
        for n, text in enumerate(caption):
            draw.text((x + cell_w // 2, y + TILE + 4 + 13 * n), _fit(draw, text, font, cell_w - 4),
                      fill=INK, font=font, anchor="ma")
    return sheet


def _fit_tile(image):
    """The image scaled to fill a tile's longer side: small images are enlarged too."""
    from PIL import Image

    scale = TILE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    smooth = Image.Resampling.BICUBIC if min(image.size) >= 8 else Image.Resampling.NEAREST
    return image.resize(size, smooth)


def _fit(draw, text: str, font, width: int) -> str:
    while text and draw.textlength(text, font=font) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text


def render_png(view: VersionView, charts: dict[str, bytes]) -> bytes:
    """Everything at a glance, one picture: a row per split (samples, then its charts),
    then the fixed and skipped images; drawn with Pillow from the charts' PNGs."""
    from PIL import Image, ImageDraw

    chart_images = {name: Image.open(io.BytesIO(data)).convert("RGB")
                    for name, data in charts.items()}
    samples_w = 6 * (TILE + 14)
    width = samples_w + max((c.width for c in chart_images.values()), default=600)
    blocks = []
    for split in view.splits:
        mosaic = _mosaic([(p, [p.caption]) for p in split.samples[:PNG_SAMPLES]], 6, samples_w)
        chart = chart_images[split.name]
        block = Image.new("RGB", (width, 28 + max(mosaic.height, chart.height)), BACKGROUND)
        ImageDraw.Draw(block).text((8, 6), _split_headline(split), fill=INK, font=_font(16))
        block.paste(mosaic, (0, 28))
        block.paste(chart, (samples_w, 28))
        blocks.append(block)
    noted = [(p, [f"{what}: {p.file_name}", p.reason or ""])
             for what, group in (("fixed", view.fixed), ("skipped", view.skipped))
             for p in group]
    if noted:
        columns = width // (TILE + 100)
        shown = noted[: columns * 2]
        more = len(noted) - len(shown)
        title = f"fixed and skipped images ({len(noted)})" + (
            f": {more} more in report.html" if more else "")
        mosaic = _mosaic(shown, columns, width)
        block = Image.new("RGB", (width, 28 + mosaic.height), BACKGROUND)
        ImageDraw.Draw(block).text((8, 6), title, fill=INK, font=_font(16))
        block.paste(mosaic, (0, 28))
        blocks.append(block)
    head = 36
    sheet = Image.new("RGB", (width, head + sum(b.height + 8 for b in blocks)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 8), _headline(view), fill=INK, font=_font(18))
    y = head
    for block in blocks:
        draw.line((0, y + 2, width, y + 2), fill=(210, 210, 210))
        sheet.paste(block, (0, y + 6))
        y += block.height + 8
    out = io.BytesIO()
    sheet.save(out, format="PNG", optimize=False)
    return out.getvalue()


def _split_headline(split: SplitView) -> str:
    return (f"{split.name}: {split.num_examples:,} examples, {len(split.shards)} shard(s), "
            f"{_human_bytes(split.num_bytes)}")


def _headline(view: VersionView) -> str:
    counts = " · ".join(f"{s.name} {s.num_examples:,}" for s in view.splits)
    return (f"{view.title} ({view.file_format}, made by "
            f"{view.made_by}): {counts}; fixed {len(view.fixed)}, skipped {len(view.skipped)}")


# --- the page ---------------------------------------------------------------------------


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _img(picture: Picture) -> str:
    if picture.thumbnail is None:
        return '<div class="broken">does not decode</div>'
    out = io.BytesIO()
    picture.thumbnail.save(out, format="JPEG", quality=85)
    alt = html.escape(f"{picture.file_name} ({picture.caption})")
    return f'<img src="{_data_uri(out.getvalue(), "image/jpeg")}" alt="{alt}">'


def _size(picture: Picture) -> str:
    dims = f"{picture.size[0]}×{picture.size[1]}" if picture.size else "?"
    return f"{dims}, {_human_bytes(picture.num_bytes)}" if picture.num_bytes else dims


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ccc; padding: .2em .5em; text-align: left; font-size: .9em;
         overflow-wrap: anywhere; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.grid { display: flex; flex-wrap: wrap; gap: .5em; }
figure { margin: 0; width: 132px; font-size: .75em; overflow-wrap: anywhere; }
figure img, .broken { width: 128px; height: 128px; object-fit: contain; background: #eee; }
td img, td .broken { width: 96px; height: 96px; }
.broken { display: flex; align-items: center; justify-content: center; color: #c44e52; }
.charts { max-width: 100%; }
code { font-size: .85em; }
"""


def render_html(view: VersionView, charts: dict[str, bytes]) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(view.title)} report</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{e(_headline(view))}</h1>",
        f"<p>Version directory: <code>{e(view.version_dir)}</code></p>",
        "<table><tr><th>split</th><th>examples</th><th>shards</th><th>bytes</th></tr>",
    ]
    for s in view.splits:
        parts.append(
            f'<tr><td>{e(s.name)}</td><td class="num" data-split="{e(s.name)}" '
            f'data-num-examples="{s.num_examples}">{s.num_examples}</td>'
            f'<td class="num">{len(s.shards)}</td><td class="num">{s.num_bytes}</td></tr>'
        )
    parts.append("</table>")
    for note in view.warnings:
        parts.append(f"<p>note: {e(note)}</p>")
    for s in view.splits:
        parts.append(f'<h2 id="split-{e(s.name)}">{e(_split_headline(s))}</h2>')
        parts.append(f"<p>{len(s.samples)} samples, evenly spaced through the split:</p>")
        parts.append('<div class="grid">')
        for p in s.samples:
            parts.append(
                f"<figure>{_img(p)}<figcaption>{e(p.caption)}<br>{e(p.file_name)}<br>"
                f"{e(_size(p))}</figcaption></figure>"
            )
        parts.append("</div>")
        chart = _data_uri(charts[s.name], "image/png")
        parts.append(f'<p><img class="charts" src="{chart}" alt="{e(s.name)} charts"></p>')
        parts.append(f"<p>{e(class_summary(s))}</p>")
        counts = s.class_counts
        if counts is not None and 0 in counts:
            empty = [class_caption(i) for i, c in enumerate(counts) if c == 0]
            shown = ", ".join(empty[:60]) + (f" … ({len(empty)} in all)" if len(empty) > 60
                                              else "")
            parts.append(f"<details><summary>classes without images</summary>"
                         f"<p>{e(shown)}</p></details>")
    for title, pictures in (("Fixed images", view.fixed), ("Skipped images", view.skipped)):
        parts.append(f"<h2>{title}: {len(pictures)}</h2>")
        if not pictures:
            continue
        parts.append("<table><tr><th></th><th>split</th><th>file</th><th>label</th>"
                     "<th>size</th><th>reason</th></tr>")
        for i, p in enumerate(pictures):
            thumb = _img(p) if i < NOTED_THUMBNAILS else ""
            parts.append(
                f"<tr><td>{thumb}</td><td>{e(p.split)}</td><td>{e(p.file_name)}</td>"
                f"<td>{e(p.caption)}</td><td>{e(_size(p))}</td><td>{e(p.reason or '')}</td></tr>"
            )
        parts.append("</table>")
    parts.append(f"<h2>Archives: {len(view.archives)}</h2>")
    if view.archives:
        parts.append("<table><tr><th>name</th><th>bytes</th><th>sha256</th><th>md5</th>"
                     "<th>checked against</th></tr>")
        checked = {"published": "image-net.org's checksum", "counts": "full ILSVRC 2012's counts"}
        for a in view.archives:
            against = checked.get(a.get("verified_against") or "", "not checked")
            parts.append(
                f"<tr><td>{e(str(a.get('name')))}</td><td class=\"num\">{a.get('size')}</td>"
                f"<td><code>{e(str(a.get('sha256')))}</code></td>"
                f"<td><code>{e(str(a.get('md5') or ''))}</code></td>"
                f"<td>{e(against)}</td></tr>"
            )
        parts.append("</table>")
        left_out = [(a["name"], p) for a in view.archives for p in a.get("ignored") or ()]
        relabelled = [(a["name"], n) for a in view.archives
                      for n in a.get("labels_from_layout") or ()]
        if left_out:
            parts.append(f"<p>Left out, as no images of the dataset: {len(left_out)} file(s): "
                         + e(", ".join(f"{n} {p}" for n, p in left_out[:50]))
                         + (" …" if len(left_out) > 50 else "") + "</p>")
        if relabelled:
            parts.append(f"<p>Labelled by the layout, not TFDS (trust_layout_labels): "
                         f"{len(relabelled)} image(s): "
                         + e(", ".join(f"{n['file_name']} {n['layout']} (TFDS: {n['tfds']})"
                                       for _, n in relabelled[:50])) + "</p>")
    elif view.made_by != "imagenet_beam":
        parts.append("<p>Not recorded: the version has no lineage.json.</p>")
    if view.classes and view.classes.get("text_from"):
        parts.append(f"<p>image/class/text from the {e(view.classes['text_from'])}.</p>")
    if view.boxes:
        parts.append("<h2>Bounding boxes</h2><table><tr><th>split</th><th>archive</th>"
                     "<th>XML files</th><th>boxes</th><th>images with boxes</th>"
                     "<th>clamped to the image</th><th>XML files for no image</th></tr>")
        for split, b in view.boxes.items():
            parts.append(
                f"<tr><td>{e(split)}</td><td>{e(b['archive'])}</td>"
                + "".join(f'<td class="num">{b[k]:,}</td>' for k in (
                    "xml_files", "boxes", "images_with_boxes", "clamped_boxes"))
                + f'<td class="num">{len(b["orphans"]):,}</td></tr>'
            )
        parts.append("</table>")
        orphans = [o for b in view.boxes.values() for o in b["orphans"]]
        if orphans:
            parts.append("<p>Not used (listed in lineage.json): " + e(", ".join(
                f"{o['member']} ({o['reason']})" for o in orphans[:20]
            )) + (" …" if len(orphans) > 20 else "") + "</p>")
    if view.classes and view.classes.get("names"):
        names = view.classes.get("names") or []
        wnids = dataset.class_names()
        parts.append(f"<h2>Classes: {len(names)} names from the devkit</h2>")
        parts.append(f"<p>{e(view.classes.get('names_from', ''))}: "
                     + e("; ".join(f"{i} · {wnids[i]} · {n}" for i, n in enumerate(names[:10])))
                     + (" …" if len(names) > 10 else "") + "</p>")
        differences = view.classes.get("train_count_differences")
        if differences is not None:
            parts.append(f"<p>Train classes whose count differs from the devkit's "
                         f"num_train_images: {len(differences)}</p>")
            if differences:
                parts.append("<table><tr><th>wnid</th><th>examples</th>"
                             "<th>devkit's num_train_images</th></tr>")
                for d in differences[:50]:
                    parts.append(f"<tr><td>{e(d['wnid'])}</td><td class=\"num\">"
                                 f"{d['examples']}</td><td class=\"num\">"
                                 f"{d['devkit_num_train_images']}</td></tr>")
                parts.append("</table>")
    if view.options:
        parts.append("<h2>Settings</h2><table>")
        for k, v in sorted(view.options.items()):
            parts.append(f"<tr><td>{e(k)}</td><td><code>{e(json.dumps(v))}</code></td></tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --- writing it -------------------------------------------------------------------------


def write_report(
    version_dir: str,
    record: metadata.Lineage | None = None,
    output_dir: str | None = None,
    published_as: str | None = None,
) -> list[str]:
    """Writes report.html and report.png for the version into output_dir (default: the
    version directory); returns their paths. record, published_as: the lineage and final
    directory of a version being published (staged, its marker not written yet)."""
    if record is None:
        record = published_lineage(version_dir)
    if record is None:
        view = _from_dataset_info(version_dir)
    else:
        view = _from_lineage(version_dir, record)
    load_pictures(version_dir, view, record)
    if published_as:
        view.version_dir = published_as
    out = output_dir or version_dir
    written = []
    charts = {split.name: split_charts(split) for split in view.splits}
    for name, data in ((REPORT_PNG, render_png(view, charts)),
                       (REPORT_HTML, render_html(view, charts).encode("utf-8"))):
        path = storage.join(out, name)
        storage.write_bytes(path, data)
        written.append(path)
    return written


def main(argv: Sequence[str]) -> int:
    import argparse
    import os
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m imagenet_beam report",
        description="Write report.html and report.png for a published version.",
    )
    parser.add_argument("version_dir", help="DATA_DIR/imagenet2012/5.1.0 (ours or TFDS's)")
    parser.add_argument("--output", default=None,
                        help="where to write them (default: the version directory)")
    args = parser.parse_args(argv)
    try:
        if args.output and not storage.is_remote(args.output):
            os.makedirs(args.output, exist_ok=True)
        paths = write_report(args.version_dir, output_dir=args.output)
    except (ValueError, KeyError, OSError) as e:  # a damaged version: ours, or TFDS's files
        from imagenet_beam import cli

        if cli._debug:
            raise
        print(f"error: {e}" if isinstance(e, ReportError) else
              f"error: {args.version_dir} cannot be reported on ({type(e).__name__}: {e}); "
              "is it a complete version directory?", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0
