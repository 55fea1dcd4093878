"""Deciding, by content, whether an image passes through as it is, is fixed, or is broken.

TFDS re-encodes 23 train images it knows by name (22 CMYK JPEGs, one PNG) and passes
every other member through byte for byte. Here the decision is made by looking at the
bytes (Pillow reads a header in microseconds), so CMYK or PNG members under any name, in
any split, come out as RGB JPEGs; broken members are reported, never written silently.
"""

from __future__ import annotations

import dataclasses
import io
import warnings

import simplejpeg
from PIL import Image

from imagenet_beam.settings import DEFAULT_MAX_PIXELS, MAX_PIXELS_CEILING  # noqa: F401

REENCODE_QUALITY = 100
RESIZE_QUALITY = 90
PASS_THROUGH_MODES = ("RGB", "L")

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_SOS = 0xDA
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC
_PLAIN_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2})
_PASS_THROUGH_COMPONENTS = (1, 3)  # Pillow's "L" and "RGB"


class CorruptImageError(ValueError):
    """The member cannot be used as an image; the message says why."""


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    data: bytes
    fix: str | None  # what was done to the member, None when it passes through
    # (width, height) of the image stored, for the report's size distribution
    size: tuple[int, int] | None = dataclasses.field(default=None, compare=False)


def _open(data: bytes) -> Image.Image:
    if not data:
        raise CorruptImageError("is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own max_pixels decides; Pillow refuses only beyond twice its limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise CorruptImageError(f"claims absurd dimensions ({e})") from None
    except Image.UnidentifiedImageError:
        raise CorruptImageError(
            f"is not an image (its first bytes are {data[:8]!r}, no known image format)"
        ) from None
    except Exception as e:  # Pillow raises many types for unreadable input
        reason = f"{type(e).__name__}: {e}"
        raise CorruptImageError(f"is not an image Pillow can read ({reason})") from None


def _decode_fully(image: Image.Image, *, pixels_needed: bool = True) -> None:
    """Decodes all of the image's compressed data; CorruptImageError if it cannot.

    pixels_needed=False (validation): a JPEG is decoded with libjpeg's DCT scaling at 1/8
    size. Every bit of its entropy-coded data is still decoded — which is where all decode
    errors come from — but the inverse DCT and colour conversion, which cannot fail, work
    on an eighth of the pixels.
    """
    if not pixels_needed and image.format == "JPEG":
        # Grayscale output where libjpeg can give it (~5% less time): the colour components
        # are still entropy-decoded, only not converted. All data in one feed (~2%).
        image.draft("L" if image.mode in ("RGB", "L") else image.mode, (1, 1))
        image.decodermaxblock = max(image.decodermaxblock, 1 << 24)
    try:
        image.load()
    except Exception as e:
        raise CorruptImageError(f"does not decode ({type(e).__name__}: {e})") from None


def _decode_plain_jpeg(data: bytes) -> None:
    """Decodes all of a plain JPEG's entropy-coded data; CorruptImageError if it cannot.

    What `_decode_fully(..., pixels_needed=False)` does, but in one call into libjpeg-turbo
    (simplejpeg) without Pillow's Python-side open: ~9% less time a JPEG. Warnings (such as
    extraneous bytes before a marker) are tolerated as Pillow and tf.io.decode_jpeg
    tolerate them; anything fatal to libjpeg is an error.
    """
    try:
        simplejpeg.decode_jpeg(
            data, colorspace="GRAY", min_height=1, min_width=1, strict=False
        )
    except Exception as e:  # ValueError from libjpeg's message, or anything else it raises
        raise CorruptImageError(f"does not decode ({type(e).__name__}: {e})") from None


@dataclasses.dataclass(frozen=True)
class JpegHeader:
    width: int
    height: int
    components: int  # 1 grayscale, 3 YCbCr/RGB, 4 CMYK/YCCK
    plain: bool  # 8-bit baseline/extended/progressive Huffman: what every decoder reads
    scan: int  # offset of the first start-of-scan marker


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """The frame header of a JPEG, by walking its markers up to the first scan.

    About a microsecond, against ~90 µs for Pillow's open; None when the bytes are not a
    JPEG this walk understands (Pillow then decides).
    """
    if not data.startswith(_SOI):
        return None
    frame = None
    pos = len(_SOI)
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == _SOS:
            if frame is None:
                return None
            return JpegHeader(*frame, scan=pos)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF_MARKERS and pos + 10 <= len(data):
            precision = data[pos + 4]
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            components = data[pos + 9]
            plain = marker in _PLAIN_SOF_MARKERS and precision == 8
            frame = (width, height, components, plain)
        pos += 2 + length
    return None


def _looks_complete(data: bytes, header: JpegHeader | None) -> bool:
    """A JPEG whose entropy-coded data ends with an end-of-image marker.

    0xFF inside scan data is always byte-stuffed, so FFD9 after the first scan marker can
    only be the real end (a thumbnail's EOI lives in APP1, before the scan). Searching
    from the end finds it at once, or just before any bytes appended after it.
    """
    return header is not None and data.rfind(_EOI) > header.scan


def _reencode_rgb_jpeg(image: Image.Image, quality: int = REENCODE_QUALITY) -> bytes:
    _decode_fully(image)
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


@dataclasses.dataclass(frozen=True)
class Resize:
    """Scale images down so that their shorter (or longer) side is at most `size` pixels."""

    side: str  # "shorter" or "max"
    size: int

    @classmethod
    def parse(cls, text: str | None) -> Resize | None:
        if not text:
            return None
        side, _, size = text.partition(":")
        if side not in ("shorter", "max") or not size.isdigit() or int(size) < 1:
            raise ValueError(
                f"resize {text!r}: give shorter:N (shorter side N pixels, e.g. shorter:256) "
                "or max:N (longer side N pixels)"
            )
        return cls(side, int(size))

    def target(self, width: int, height: int) -> tuple[int, int]:
        side = min(width, height) if self.side == "shorter" else max(width, height)
        if side <= self.size:
            return width, height  # never enlarged
        scale = self.size / side
        return max(1, round(width * scale)), max(1, round(height * scale))


def _resized_jpeg(image: Image.Image, resize: Resize) -> bytes:
    size = resize.target(*image.size)
    if image.format == "JPEG":
        image.draft("RGB", size)  # let libjpeg scale down while decoding where it can
    _decode_fully(image)
    image = image.convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=RESIZE_QUALITY)
    return out.getvalue()


def _check_dimensions(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0 or width * height > max_pixels:
        raise CorruptImageError(
            f"claims absurd dimensions {width}x{height} (limit {max_pixels} pixels)"
        )


def prepare_image(
    data: bytes,
    *,
    validate: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    resize: Resize | None = None,
) -> PreparedImage:
    """The bytes to store for one member, or CorruptImageError saying what is wrong.

    validate: decode all of every image's compressed data (about a millisecond each)
    instead of only reading headers and checking that JPEG data is not cut short.
    resize: decode, scale down and re-encode every image (RGB JPEG, quality 90).
    """
    header = read_jpeg_header(data)
    if resize is not None:
        image = _open(data)
        _check_dimensions(*image.size, max_pixels)
        fix = None
        if not (image.format == "JPEG" and image.mode in PASS_THROUGH_MODES):
            fix = f"{image.format} {image.mode} re-encoded as RGB JPEG"
        return PreparedImage(_resized_jpeg(image, resize), fix, resize.target(*image.size))
    if (
        header is not None
        and header.plain
        and header.components in _PASS_THROUGH_COMPONENTS
        and _looks_complete(data, header)
    ):
        _check_dimensions(header.width, header.height, max_pixels)
        if validate:
            _decode_plain_jpeg(data)
        # the common case, decided without Pillow
        return PreparedImage(data, None, (header.width, header.height))
    image = _open(data)
    _check_dimensions(*image.size, max_pixels)
    if image.format == "JPEG" and image.mode in PASS_THROUGH_MODES:
        if validate or not _looks_complete(data, header):
            _decode_fully(image, pixels_needed=False)
        return PreparedImage(data, None, image.size)
    fix = f"{image.format} {image.mode} re-encoded as RGB JPEG"
    return PreparedImage(_reencode_rgb_jpeg(image), fix, image.size)
