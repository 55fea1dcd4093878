"""Each member is passed through, fixed, or reported, decided by its content alone."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imagenet_beam import images, synthetic
from imagenet_beam.images import CorruptImageError, prepare_image

SIZE = (64, 48)
PASS_THROUGH_KINDS = (
    "plain",
    "grayscale",
    "progressive",
    "exif_rotated",
    "icc_profile",
    "trailing_bytes",
    "tiny",
    "large",
)
CMYK_KINDS = ("cmyk_tfds_name", "cmyk_other_name")
PNG_KINDS = ("png_tfds_name", "png_other_name")


def make(kind: str, seed: int = 0, size: tuple[int, int] = SIZE) -> bytes:
    return synthetic.image_bytes(kind, np.random.default_rng(seed), size)


def decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_every_generator_kind_is_covered_here() -> None:
    covered = set(PASS_THROUGH_KINDS) | set(CMYK_KINDS) | set(PNG_KINDS)
    assert covered == {*synthetic.AWKWARD_KINDS, synthetic.PLAIN}


@pytest.mark.parametrize("validate", [False, True], ids=["headers", "validate"])
@pytest.mark.parametrize("kind", PASS_THROUGH_KINDS)
def test_pass_through_kinds_come_back_byte_identical(kind: str, validate: bool) -> None:
    data = make(kind)
    prepared = prepare_image(data, validate=validate)
    assert prepared.fix is None
    assert prepared.data == data


def check_rgb_jpeg_like(prepared: images.PreparedImage, source: bytes) -> None:
    out = decoded(prepared.data)
    assert out.format == "JPEG"
    assert out.mode == "RGB"
    original = decoded(source)
    assert out.size == original.size
    diff = np.abs(
        np.asarray(out, dtype=np.int16) - np.asarray(original.convert("RGB"), dtype=np.int16)
    )
    assert diff.mean() < 8, diff.mean()


@pytest.mark.parametrize("kind", CMYK_KINDS)
def test_cmyk_jpeg_becomes_rgb_jpeg(kind: str) -> None:
    data = make(kind)
    assert decoded(data).mode == "CMYK"
    prepared = prepare_image(data)
    assert prepared.data != data
    assert prepared.fix is not None and "CMYK" in prepared.fix and "JPEG" in prepared.fix
    check_rgb_jpeg_like(prepared, data)
    # The fixed image is itself a pass-through image now.
    again = prepare_image(prepared.data, validate=True)
    assert again.fix is None and again.data == prepared.data


@pytest.mark.parametrize("kind", PNG_KINDS)
def test_png_becomes_rgb_jpeg(kind: str) -> None:
    data = make(kind)
    assert decoded(data).format == "PNG"
    prepared = prepare_image(data)
    assert prepared.fix is not None and "PNG" in prepared.fix
    check_rgb_jpeg_like(prepared, data)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("RGBA", "PNG"), ("L", "PNG"), ("P", "PNG"), ("RGB", "GIF"), ("RGB", "BMP"), ("RGB", "WEBP")],
)
def test_other_formats_and_modes_are_reencoded(mode: str, fmt: str) -> None:
    rgb = Image.open(io.BytesIO(make("plain"))).convert("RGB")
    buf = io.BytesIO()
    rgb.convert(mode).save(buf, fmt)
    prepared = prepare_image(buf.getvalue())
    assert prepared.fix is not None and fmt in prepared.fix
    out = decoded(prepared.data)
    assert (out.format, out.mode, out.size) == ("JPEG", "RGB", rgb.size)


def test_reencode_is_deterministic() -> None:
    data = make("cmyk_other_name", seed=5)
    assert prepare_image(data).data == prepare_image(data).data


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("empty", ("empty",)),
        ("not_an_image", ("not an image",)),
        ("huge_dimensions", ("dimensions",)),
        ("truncated", ("does not decode",)),
    ],
)
@pytest.mark.parametrize("validate", [False, True], ids=["headers", "validate"])
def test_broken_kinds_raise_saying_what_is_wrong(
    kind: str, words: tuple[str, ...], validate: bool
) -> None:
    assert kind in synthetic.BROKEN_KINDS
    with pytest.raises(CorruptImageError) as err:
        prepare_image(make(kind), validate=validate)
    message = str(err.value)
    for word in words:
        assert word in message, message


def test_every_broken_kind_is_covered_here() -> None:
    assert set(synthetic.BROKEN_KINDS) == {"empty", "not_an_image", "huge_dimensions", "truncated"}


@pytest.mark.parametrize("kind", ["plain", "progressive", "grayscale", "exif_rotated"])
@pytest.mark.parametrize("fraction", [0.4, 0.6, 0.9])
def test_jpeg_cut_inside_its_scan_data_is_caught_without_validate(
    kind: str, fraction: float
) -> None:
    data = make(kind, seed=3)
    cut = data[: int(len(data) * fraction)]
    with pytest.raises(CorruptImageError, match="does not decode"):
        prepare_image(cut)


def test_jpeg_cut_just_before_its_end_marker_is_caught() -> None:
    data = make("plain", seed=4)
    assert data.endswith(b"\xff\xd9")
    with pytest.raises(CorruptImageError):
        prepare_image(data[:-3])


def test_validate_decodes_a_plain_jpeg() -> None:
    data = make("plain", seed=7)
    assert prepare_image(data, validate=True) == images.PreparedImage(data, None)


def test_trailing_junk_after_end_marker_passes_validation() -> None:
    data = make("trailing_bytes", seed=8)
    assert data.endswith(synthetic.TRAILING_JUNK)
    for validate in (False, True):
        assert prepare_image(data, validate=validate) == images.PreparedImage(data, None)


def test_max_pixels_below_the_image_raises() -> None:
    data = make("plain", seed=9)
    width, height = decoded(data).size
    pixels = width * height
    assert prepare_image(data, max_pixels=pixels).data == data
    with pytest.raises(CorruptImageError) as err:
        prepare_image(data, max_pixels=pixels - 1)
    assert "dimensions" in str(err.value)
    assert f"{width}x{height}" in str(err.value)
    assert str(pixels - 1) in str(err.value)


def test_max_pixels_can_be_raised_above_pillows_warning_limit() -> None:
    data = make("huge_dimensions", seed=1)
    claimed = 60000 * 60000
    assert claimed > images.MAX_PIXELS_CEILING  # still refused: Pillow will not open it
    with pytest.raises(CorruptImageError, match="dimensions"):
        prepare_image(data, max_pixels=images.MAX_PIXELS_CEILING)
    # A small image whose header claims 10000x9000: only the header is looked at.
    big = synthetic.set_jpeg_dimensions(make("plain", seed=2), 10000, 9000)
    assert 10000 * 9000 > images.DEFAULT_MAX_PIXELS
    with pytest.raises(CorruptImageError, match="dimensions"):
        prepare_image(big)
    assert prepare_image(big, max_pixels=images.MAX_PIXELS_CEILING).data == big


def test_max_pixels_also_applies_to_images_to_fix() -> None:
    data = make("png_other_name", seed=9)
    width, height = decoded(data).size
    with pytest.raises(CorruptImageError, match="dimensions"):
        prepare_image(data, max_pixels=width * height - 1)


def test_header_claiming_more_than_the_default_limit_raises() -> None:
    lying = synthetic.set_jpeg_dimensions(make("plain"), 20000, 20000)  # 400 Mpx
    with pytest.raises(CorruptImageError, match="dimensions"):
        prepare_image(lying)


def test_fixing_a_truncated_png_raises() -> None:
    data = make("png_other_name", seed=11)
    with pytest.raises(CorruptImageError, match="does not decode"):
        prepare_image(data[: len(data) // 2])


def with_bogus_huffman_table(data: bytes) -> bytes:
    """The JPEG with its first Huffman table's code counts overflowing (fatal to libjpeg)."""
    pos = 2
    while data[pos + 1] != 0xC4:  # DHT
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    out = bytearray(data)
    out[pos + 5 : pos + 21] = b"\xff" * 16  # 16 code-length counts after length and class
    return bytes(out)


def test_validate_catches_what_only_a_full_decode_finds() -> None:
    data = with_bogus_huffman_table(make("plain", seed=12))
    # Headers and the end marker look fine, so the quick check lets it through ...
    assert prepare_image(data, validate=False).data == data
    # ... and decoding it, as --validate does, shows it is broken.
    with pytest.raises(CorruptImageError, match="does not decode"):
        prepare_image(data, validate=True)


def test_validate_accepts_what_libjpeg_only_warns_about_as_tensorflow_does() -> None:
    """Junk before the end marker: libjpeg warns ("extraneous bytes before marker") and
    decodes; tf.io.decode_jpeg, which reads these shards, decodes it too. Not corrupt."""
    import tensorflow as tf

    data = make("plain", seed=13)
    warned = data[:-2] + b"\x12\x34\x56" + data[-2:]
    assert tf.io.decode_jpeg(warned).shape[2] == 3
    assert prepare_image(warned, validate=True) == images.PreparedImage(warned, None)


def test_validate_decodes_every_scan_of_a_progressive_jpeg() -> None:
    """A progressive JPEG defines Huffman tables between its scans. Break the last one:
    only a decode that reaches the last scan (even at 1/8 scale) can tell."""
    data = make("progressive", seed=14)
    header = images.read_jpeg_header(data)
    last_table = data.rindex(b"\xff\xc4")
    assert last_table > header.scan  # a table between scans, not in the header
    out = bytearray(data)
    out[last_table + 5 : last_table + 21] = b"\xff" * 16  # code-length counts overflow
    broken = bytes(out)
    assert prepare_image(broken, validate=False).data == broken  # headers and end look fine
    assert prepare_image(data, validate=True).data == data
    with pytest.raises(CorruptImageError, match="does not decode"):
        prepare_image(broken, validate=True)


@pytest.mark.parametrize("kind", ("plain", *synthetic.AWKWARD_KINDS, "truncated"))
def test_the_fast_jpeg_header_agrees_with_pillow(kind: str) -> None:
    data = make(kind, seed=11)
    header = images.read_jpeg_header(data)
    opened = Image.open(io.BytesIO(data))
    if opened.format != "JPEG":
        assert header is None
        return
    assert (header.width, header.height) == opened.size
    assert header.components == {"L": 1, "RGB": 3, "CMYK": 4}[opened.mode]
    assert header.plain


@pytest.mark.parametrize(
    ("spec", "side", "limit"),
    [("shorter:24", min, 24), ("max:32", max, 32), ("shorter:100", min, None)],
)
def test_resize_reencodes_every_image_scaled_down(spec, side, limit) -> None:
    resize = images.Resize.parse(spec)
    for kind in ("plain", "grayscale", "png_other_name", "cmyk_other_name"):
        data = make(kind, seed=3)
        original = decoded(data)
        prepared = prepare_image(data, resize=resize)
        out = decoded(prepared.data)
        assert (out.format, out.mode) == ("JPEG", "RGB"), kind
        if limit is None:
            assert out.size == original.size  # never enlarged
        else:
            assert side(out.size) == limit, (kind, original.size, out.size)
            ratio = original.size[0] / original.size[1]
            assert abs(out.size[0] / out.size[1] - ratio) < 0.1
        assert (prepared.fix is None) == (kind in ("plain", "grayscale")), kind


@pytest.mark.parametrize("spec", ["256", "shorter:", "min:256", "shorter:0", "max:-3"])
def test_a_bad_resize_says_how_to_write_it(spec) -> None:
    with pytest.raises(ValueError, match="shorter:N"):
        images.Resize.parse(spec)
