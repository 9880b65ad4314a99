"""Profile pictures: validate an upload, re-encode it clean, store it by content.

An upload is hostile until proven otherwise: it may be a script with an image
header (a polyglot), a few kilobytes that decompress to gigabytes (a pixel bomb),
a truncated file, or a photo carrying its owner's GPS position in EXIF. So the
bytes the client sent are never stored or served. :func:`validate_avatar` decodes
them fully and keeps only freshly encoded pixels:

* at most :data:`MAX_UPLOAD_BYTES` (2 MiB) of input, and not empty;
* the magic bytes must say PNG, JPEG, GIF or WebP, checked before Pillow sees the
  data, so only those four decoders are ever reached; Pillow must then agree on
  the format;
* at most :data:`MAX_SIDE` (8192) pixels a side and :data:`MAX_PIXELS`
  (16,000,000) pixels in all, checked from the header before any pixel is decoded.
  The limit is ours and applies on every call whatever ``Image.MAX_IMAGE_PIXELS``
  is set to; Pillow's own decompression-bomb error (and its warning, where the
  process turns warnings into errors) is refused as well;
* the first frame is decoded completely: a truncated or corrupt file is refused
  (this relies on Pillow's default ``ImageFile.LOAD_TRUNCATED_IMAGES = False``);
* the EXIF orientation is applied, colours are converted to sRGB when the file
  carries an ICC profile, and the picture is shrunk to fit in
  :data:`OUTPUT_MAX_SIDE` (512) pixels a side, keeping its aspect ratio;
* it is re-encoded with no metadata at all (no EXIF, no ICC profile, no XMP, no
  comments): as PNG when it has transparency, otherwise as progressive JPEG at
  quality 85;
* its key is the SHA-256 of the output, in hex, with ``.png`` or ``.jpg``
  (:mod:`actors.rules.image_keys`).

Any failure on the way is an :class:`~actors.wire.errors.InvalidInput` (field
``avatar``), apart from a body over the size limit (:class:`PayloadTooLarge`) and
a type that is not one of the four (:class:`UnsupportedMediaType`); no Pillow
exception escapes.

:func:`validate_avatar` is synchronous and CPU-bound; callers run it in a thread
(``asyncio.to_thread``). It only reads its argument and returns a value.

Where the result is kept is :mod:`actors.web.image_store`'s business.
"""

from __future__ import annotations

import contextlib
import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from PIL import Image, ImageCms, ImageOps

from actors.rules import image_keys
from actors.wire.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

MAX_UPLOAD_BYTES: Final = 2 * 1024 * 1024
MAX_PIXELS: Final = 16_000_000
MAX_SIDE: Final = 8192
OUTPUT_MAX_SIDE: Final = 512
JPEG_QUALITY: Final = 85

# What each magic-byte family may turn out to be once Pillow has parsed the header.
# A JPEG with several pictures (some phone cameras write them) opens as MPO.
_PILLOW_FORMATS: Final[dict[str, frozenset[str]]] = {
    "PNG": frozenset({"PNG"}),
    "JPEG": frozenset({"JPEG", "MPO"}),
    "GIF": frozenset({"GIF"}),
    "WEBP": frozenset({"WEBP"}),
}

# Pillow's parsers are partly Python and partly C; on hostile input they fail with a
# wide spread of exception types, and every one of them means "not a usable image".
_DECODE_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,  # includes UnidentifiedImageError and "image file is truncated"
    ValueError,
    SyntaxError,
    struct.error,
    EOFError,
    LookupError,
    TypeError,
    AttributeError,
    ArithmeticError,
    RecursionError,
    ImageCms.PyCMSError,
)
_BOMB_ERRORS: Final[tuple[type[BaseException], ...]] = (
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)

_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WIDE_GRAY_MODES: Final = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})

_TOO_LARGE: Final = (
    f"image is too large: at most {MAX_SIDE} pixels a side and {MAX_PIXELS:,} pixels in all"
)
_CORRUPT: Final = "image is truncated or corrupt"


@dataclass(frozen=True, slots=True)
class StoredImage:
    """A validated, re-encoded picture and the content-derived key it is stored under."""

    key: str
    data: bytes = field(repr=False)
    content_type: str


def sniff_format(data: bytes) -> str | None:
    """Name the image family from the magic bytes, or ``None`` if it is none of the four."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def validate_avatar(data: bytes) -> StoredImage:
    """Check an uploaded picture and return it re-encoded, without metadata, with its key.

    Raises :class:`PayloadTooLarge` over :data:`MAX_UPLOAD_BYTES`,
    :class:`UnsupportedMediaType` for anything but PNG, JPEG, GIF and WebP, and
    :class:`InvalidInput` for everything else that is wrong with it.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInput("avatar must be a file", field="avatar")
    data = bytes(data)
    if not data:
        raise InvalidInput("avatar is empty", field="avatar")
    if len(data) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge(
            f"avatar is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB", field="avatar"
        )
    kind = sniff_format(data)
    if kind is None:
        raise UnsupportedMediaType("avatar must be a PNG, JPEG, GIF or WebP image", field="avatar")

    picture = _decode(data, kind)
    with _refused_as(_CORRUPT):
        output, ext = _encode(picture)
    return StoredImage(
        key=image_keys.key_for(output, ext), data=output, content_type=image_keys.CONTENT_TYPES[ext]
    )


@contextlib.contextmanager
def _refused_as(message: str) -> Iterator[None]:
    """Turn whatever Pillow raises into :class:`InvalidInput` with ``message``."""
    try:
        yield
    except _BOMB_ERRORS as exc:
        raise InvalidInput(_TOO_LARGE, field="avatar") from exc
    except _DECODE_ERRORS as exc:
        raise InvalidInput(message, field="avatar") from exc


def _check_size(width: int, height: int) -> None:
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and width * height <= MAX_PIXELS):
        raise InvalidInput(_TOO_LARGE, field="avatar")


def _decode(data: bytes, kind: str) -> Image.Image:
    """Open, bound, fully decode and orient the first frame, then shrink it to sRGB pixels."""
    with _refused_as(f"avatar is not a valid {kind} image"):
        # Only the plugin the magic bytes chose may read the data.
        source = Image.open(io.BytesIO(data), formats=[kind])
    with source:
        if source.format not in _PILLOW_FORMATS[kind]:
            raise InvalidInput("avatar content does not match its type", field="avatar")
        # The header's size, before one pixel is decoded.
        _check_size(*source.size)
        with _refused_as(_CORRUPT):
            source.seek(0)  # the first frame only, for GIF, APNG, WebP and MPO
            if source.format in ("JPEG", "MPO"):
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result still
                # covers the output size: less memory and time, same thumbnail.
                source.draft(None, (OUTPUT_MAX_SIDE, OUTPUT_MAX_SIDE))
            source.load()
            _check_size(*source.size)
            oriented = ImageOps.exif_transpose(source)
            icc = source.info.get("icc_profile")
            return _to_srgb_thumbnail(
                oriented,
                has_alpha=oriented.mode in _ALPHA_MODES or "transparency" in source.info,
                icc_profile=icc if isinstance(icc, bytes) and icc else None,
            )


def _to_srgb_thumbnail(
    img: Image.Image, *, has_alpha: bool, icc_profile: bytes | None
) -> Image.Image:
    """Shrink to fit :data:`OUTPUT_MAX_SIDE` and return RGB, or RGBA if any pixel is see-through.

    ``has_alpha`` and ``icc_profile`` come from the source file's header, which a
    transposed copy does not always carry over.
    """
    target = "RGBA" if has_alpha else "RGB"

    if img.mode in _WIDE_GRAY_MODES:
        # 16-bit grey: scale to 8 bits; a plain convert would clip everything to white.
        img = img.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    if not (img.mode == "CMYK" and icc_profile is not None and not has_alpha):
        # CMYK with a profile is kept for the colour conversion, which does it properly.
        img = img.convert(target)

    # Resample in RGB(A) (Pillow premultiplies alpha), never in palette mode.
    img.thumbnail((OUTPUT_MAX_SIDE, OUTPUT_MAX_SIDE), Image.Resampling.LANCZOS)

    if icc_profile is not None:
        img = _profile_to_srgb(img, icc_profile, target)
    if img.mode != target:
        img = img.convert(target)
    if target == "RGBA":
        lowest, _ = img.getchannel("A").getextrema()
        if lowest == 255:  # an alpha channel that hides nothing
            img = img.convert("RGB")
    return img


def _profile_to_srgb(img: Image.Image, icc: bytes, target: str) -> Image.Image:
    """Convert colours to sRGB before the profile is dropped, so the picture looks the same.

    Phone photos are often Display P3 and print files CMYK; without this they would
    show washed out or wrong once the profile is gone. A profile that cannot be
    used (corrupt, or for another colour space) is ignored, and the pixels are kept
    as they are, as a browser would show them.
    """
    out_mode = "RGB" if img.mode == "CMYK" else target
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        # Built per call: cheap, and no profile object is shared between threads.
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        converted = ImageCms.profileToProfile(img, source, srgb, outputMode=out_mode)
    except _DECODE_ERRORS:
        return img
    return converted if converted is not None else img


def _encode(img: Image.Image) -> tuple[bytes, str]:
    """Encode fresh pixels: PNG with alpha, progressive JPEG without; no metadata at all."""
    # A new image from the raw pixels carries no info dict: no EXIF, ICC, XMP, comment
    # or text chunk can ride along, whatever a plugin would otherwise copy on save.
    clean = Image.frombytes(img.mode, img.size, img.tobytes())
    buffer = io.BytesIO()
    if clean.mode == "RGBA":
        clean.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue(), ".png"
    clean.save(buffer, format="JPEG", quality=JPEG_QUALITY, progressive=True, optimize=True)
    return buffer.getvalue(), ".jpg"
