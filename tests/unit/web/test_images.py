"""Avatar validation on real images made here with Pillow, hostile ones included, and the
local image store."""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import GifImagePlugin, Image, ImageCms
from PIL.PngImagePlugin import PngInfo

from actors.rules.image_keys import KEY_RE
from actors.web.images import (
    MAX_UPLOAD_BYTES,
    OUTPUT_MAX_SIDE,
    StoredImage,
    sniff_format,
    validate_avatar,
)
from actors.wire.errors import CallerError, InvalidInput, PayloadTooLarge, UnsupportedMediaType

RED = (255, 0, 0)
BLUE = (0, 0, 255)


# -- making test images -------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def noisy(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Random-looking pixels, so the file does not compress to almost nothing."""
    raw = hashlib.shake_256(b"userhub").digest(size[0] * size[1] * len(mode))
    return Image.frombytes(mode, size, raw)


def halves(
    size: tuple[int, int], left: tuple[int, int, int], right: tuple[int, int, int]
) -> Image.Image:
    img = Image.new("RGB", size, left)
    img.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return img


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A real, valid 1-bit PNG of ``width`` x ``height`` black pixels: a few tens of KB.

    Written chunk by chunk, as Pillow would write ``Image.new("1", (20000, 20000))``,
    without first allocating the 400 MB that Pillow would need to hold that image.
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def opened(stored: StoredImage) -> Image.Image:
    img = Image.open(io.BytesIO(stored.data))
    img.load()
    return img


def pixel(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    """The colour at ``xy``, one value per band (every picture stored is RGB or RGBA)."""
    value = img.getpixel(xy)
    assert isinstance(value, tuple), value
    return value


def near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def assert_no_metadata(stored: StoredImage) -> None:
    img = opened(stored)
    assert len(img.getexif()) == 0
    for key in ("exif", "icc_profile", "xmp", "comment", "XML:com.adobe.xmp"):
        assert key not in img.info
    assert b"Exif" not in stored.data
    assert b"ICC_PROFILE" not in stored.data and b"iCCP" not in stored.data
    assert b"tEXt" not in stored.data and b"iTXt" not in stored.data and b"zTXt" not in stored.data


def assert_well_formed(stored: StoredImage) -> None:
    assert KEY_RE.match(stored.key)
    assert stored.key[:64] == hashlib.sha256(stored.data).hexdigest()
    img = opened(stored)
    if stored.key.endswith(".png"):
        assert (img.format, img.mode, stored.content_type) == ("PNG", "RGBA", "image/png")
    else:
        assert (img.format, img.mode, stored.content_type) == ("JPEG", "RGB", "image/jpeg")
        assert img.info.get("progressive") or img.info.get("progression")
    assert max(img.size) <= OUTPUT_MAX_SIDE
    assert_no_metadata(stored)


# -- accepted pictures --------------------------------------------------------------------


def test_png_with_alpha_stays_png_with_alpha() -> None:
    img = Image.new("RGBA", (64, 48), (0, 128, 255, 255))
    img.paste((255, 0, 0, 0), (0, 0, 32, 48))  # left half fully transparent
    stored = validate_avatar(encode(img, "PNG"))
    assert_well_formed(stored)
    assert stored.key.endswith(".png")
    out = opened(stored)
    assert out.size == (64, 48)
    assert pixel(out, (5, 5))[3] == 0
    assert out.getpixel((50, 5)) == (0, 128, 255, 255)


def test_opaque_alpha_becomes_jpeg() -> None:
    stored = validate_avatar(encode(Image.new("RGBA", (40, 40), (10, 200, 10, 255)), "PNG"))
    assert_well_formed(stored)
    assert stored.key.endswith(".jpg")


def test_jpeg_exif_is_applied_then_stripped() -> None:
    # Stored sideways with orientation 6 ("rotate 90° clockwise to display"): red on
    # the left of the stored pixels must end up on top of the output.
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    exif[0x010F] = "SecretCameraMaker"  # Make
    exif[0x0131] = "SecretSoftware"  # Software
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(
        halves((80, 40), RED, BLUE),
        "JPEG",
        exif=exif.tobytes(),
        icc_profile=icc,
        comment=b"SecretComment",
        quality=95,
    )
    source = Image.open(io.BytesIO(data))
    assert source.getexif()[0x0112] == 6 and "icc_profile" in source.info  # the test is real

    stored = validate_avatar(data)
    assert_well_formed(stored)
    for secret in (b"SecretCameraMaker", b"SecretSoftware", b"SecretComment"):
        assert secret not in stored.data
    out = opened(stored)
    assert out.size == (40, 80)
    assert near(pixel(out, (20, 10)), RED)
    assert near(pixel(out, (20, 70)), BLUE)


def test_png_text_chunks_are_stripped() -> None:
    info = PngInfo()
    info.add_text("Author", "SecretAuthor")
    info.add_itxt("Comment", "SecretItxt")
    stored = validate_avatar(encode(noisy((30, 30)), "PNG", pnginfo=info))
    assert_well_formed(stored)
    assert b"SecretAuthor" not in stored.data and b"SecretItxt" not in stored.data


def test_gif_animation_keeps_the_first_frame() -> None:
    frames = [Image.new("RGB", (50, 50), RED), Image.new("RGB", (50, 50), BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    source = Image.open(io.BytesIO(data))
    assert isinstance(source, GifImagePlugin.GifImageFile) and source.n_frames == 2
    stored = validate_avatar(data)
    assert_well_formed(stored)
    out = opened(stored)
    assert getattr(out, "n_frames", 1) == 1
    assert near(pixel(out, (25, 25)), RED)


def test_gif_with_transparency_becomes_png() -> None:
    img = Image.new("P", (20, 20), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.paste(0, (0, 0, 10, 20))
    stored = validate_avatar(encode(img, "GIF", transparency=0))
    assert_well_formed(stored)
    out = opened(stored)
    assert pixel(out, (2, 2))[3] == 0
    assert out.getpixel((15, 2)) == (255, 0, 0, 255)


def test_webp_is_accepted() -> None:
    stored = validate_avatar(encode(Image.new("RGB", (33, 21), BLUE), "WEBP", quality=90))
    assert_well_formed(stored)
    assert opened(stored).size == (33, 21)


def test_large_picture_is_shrunk_keeping_its_aspect() -> None:
    stored = validate_avatar(encode(noisy((2000, 1000)), "JPEG", quality=60))
    assert_well_formed(stored)
    assert opened(stored).size == (OUTPUT_MAX_SIDE, OUTPUT_MAX_SIDE // 2)


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    img = Image.new("I;16", (8, 8), 32768)  # mid grey in 16 bits
    stored = validate_avatar(encode(img, "PNG"))
    assert_well_formed(stored)
    assert near(pixel(opened(stored), (4, 4)), (128, 128, 128), 5)


def test_unusable_icc_profile_is_ignored() -> None:
    data = encode(Image.new("RGB", (16, 16), RED), "JPEG", icc_profile=b"not a profile" * 10)
    assert Image.open(io.BytesIO(data)).info["icc_profile"]  # the test is real
    stored = validate_avatar(data)
    assert_well_formed(stored)
    assert near(pixel(opened(stored), (8, 8)), RED)


def test_srgb_profile_keeps_colours() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = Image.new("RGBA", (16, 16), (200, 100, 50, 128))
    stored = validate_avatar(encode(img, "PNG", icc_profile=icc))
    assert_well_formed(stored)
    assert near(pixel(opened(stored), (8, 8)), (200, 100, 50, 128), 3)


def test_cmyk_jpeg_becomes_rgb() -> None:
    stored = validate_avatar(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG"))
    assert_well_formed(stored)
    assert near(pixel(opened(stored), (8, 8)), RED)


def test_same_picture_same_key() -> None:
    data = encode(noisy((64, 64)), "PNG")
    first, second = validate_avatar(data), validate_avatar(bytes(bytearray(data)))
    assert first == second


def test_repr_does_not_dump_the_bytes() -> None:
    stored = validate_avatar(encode(noisy((64, 64)), "PNG"))
    assert len(repr(stored)) < 200


# -- refused uploads -----------------------------------------------------------------------


def refused(data: object, error: type[CallerError] = InvalidInput) -> CallerError:
    with pytest.raises(error) as caught:
        # object, not bytes: test_not_bytes_is_refused passes a str on purpose, to check
        # the isinstance guard validate_avatar keeps against callers that ignore its type.
        validate_avatar(data)  # type: ignore[arg-type]
    assert type(caught.value) is error
    assert caught.value.field == "avatar"
    return caught.value


def test_empty_is_refused() -> None:
    assert "empty" in refused(b"").message


def test_not_bytes_is_refused() -> None:
    refused("a string, not a file")


def test_text_file_is_unsupported() -> None:
    refused(b"hello", UnsupportedMediaType)


@pytest.mark.parametrize(
    "data",
    [
        b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
        b"BM" + b"\x00" * 100,  # BMP
        b"II*\x00" + b"\x00" * 100,  # TIFF
        b"%PDF-1.4\n",
        b"\x00\x00\x01\x00" + b"\x00" * 100,  # ICO
    ],
)
def test_other_types_are_unsupported(data: bytes) -> None:
    refused(data, UnsupportedMediaType)


def test_real_bmp_is_unsupported() -> None:
    refused(encode(Image.new("RGB", (4, 4)), "BMP"), UnsupportedMediaType)


def test_over_the_size_limit_is_refused_before_decoding() -> None:
    data = encode(Image.new("RGB", (4, 4)), "PNG")
    refused(data + b"\x00" * (MAX_UPLOAD_BYTES + 1 - len(data)), PayloadTooLarge)


def test_exactly_the_size_limit_is_not_refused_for_size() -> None:
    data = encode(Image.new("RGB", (4, 4)), "PNG")
    padded = data + b"\x00" * (MAX_UPLOAD_BYTES - len(data))  # junk after IEND is ignored
    assert_well_formed(validate_avatar(padded))


def test_truncated_png_is_refused() -> None:
    data = encode(noisy((200, 200)), "PNG")
    assert "truncated or corrupt" in refused(data[: len(data) // 2]).message


def test_truncated_jpeg_is_refused() -> None:
    data = encode(noisy((200, 200)), "JPEG")
    refused(data[: len(data) // 2])


def test_pixel_bomb_is_refused() -> None:
    data = png_bomb()
    assert len(data) < 100_000  # small on the wire, 400 megapixels once decoded
    assert "too large" in refused(data).message


def test_pixel_bomb_is_refused_even_with_pillows_limit_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert "too large" in refused(png_bomb()).message


def test_pillows_bomb_warning_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Where Pillow's own limit is stricter and warnings are errors, its warning
    # surfaces as an exception: it must still come out as InvalidInput.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert "too large" in refused(encode(Image.new("RGB", (10, 15)), "PNG")).message


def test_our_pixel_limit_is_below_pillows() -> None:
    # 5000 x 4000 = 20 MP: Pillow's default (89 MP) would let it through.
    assert "too large" in refused(encode(Image.new("1", (5000, 4000)), "PNG")).message


def test_too_wide_is_refused() -> None:
    assert "too large" in refused(encode(Image.new("1", (9000, 2)), "PNG")).message


@pytest.mark.parametrize(
    "data",
    [
        b"GIF89a/*" + b"*/=alert(1)//" + b" " * 64,
        b"GIF89a/*" + b"*/=alert(document.cookie);/*" + b"\x00" * 32 + b"*/",
        # A header that describes a small, valid-looking screen, then script.
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;alert(1)//",
        b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + b"\x00" * 6 + b"=1;alert(1)//",
    ],
)
def test_gif_script_polyglot_is_refused(data: bytes) -> None:
    assert sniff_format(data) == "GIF"
    refused(data)


# A well-formed GIF header and image descriptor, then script where the pixel data
# should be: Pillow opens it, so it is the full decode that must refuse it.
GIF_DESCRIPTOR = b"GIF89a\x0a\x00\x0a\x00\x00\x00\x00,\x00\x00\x00\x00\x0a\x00\x0a\x00\x00\x08"


@pytest.mark.parametrize(
    "data",
    [
        GIF_DESCRIPTOR + b"\x0d*/=alert(1)//\x00;",
        GIF_DESCRIPTOR + b"*/=alert(1)//",
    ],
)
def test_gif_polyglot_that_opens_is_refused_on_decode(data: bytes) -> None:
    Image.open(io.BytesIO(data))  # gets past the header
    assert "truncated or corrupt" in refused(data).message


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n" + b"not really a png",
        b"\xff\xd8\xff" + b"\x00" * 50,
        b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 20,
        b"GIF87a",
    ],
)
def test_right_magic_wrong_body_is_refused(data: bytes) -> None:
    refused(data)


def test_png_magic_in_front_of_a_jpeg_is_refused() -> None:
    refused(b"\x89PNG\r\n\x1a\n" + encode(noisy((20, 20)), "JPEG"))


SAMPLE_PNG = encode(noisy((24, 24), "RGBA"), "PNG")
SAMPLE_JPEG = encode(noisy((24, 24)), "JPEG")
SAMPLE_GIF = encode(noisy((24, 24)).convert("P"), "GIF")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.tuples(
            st.sampled_from(
                [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"GIF87a", b"RIFF\0\0\0\0WEBP"]
            ),
            st.binary(max_size=300),
        ).map(b"".join),
    )
)
def test_arbitrary_bytes_are_an_image_or_a_caller_error(data: bytes) -> None:
    try:
        stored = validate_avatar(data)
    except (InvalidInput, UnsupportedMediaType) as error:
        assert error.field == "avatar"
        return
    assert_well_formed(stored)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([SAMPLE_PNG, SAMPLE_JPEG, SAMPLE_GIF]),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(min_value=1),
)
def test_damaged_images_are_an_image_or_invalid(
    sample: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(sample[: max(1, cut % (len(sample) + 1))])
    for where, value in flips:
        data[where % len(data)] = value
    try:
        stored = validate_avatar(bytes(data))
    except (InvalidInput, UnsupportedMediaType) as error:
        assert error.field == "avatar"
        return
    assert_well_formed(stored)


# -- formats ----------------------------------------------------------------------------------


def test_sniff_format() -> None:
    assert sniff_format(SAMPLE_PNG) == "PNG"
    assert sniff_format(SAMPLE_JPEG) == "JPEG"
    assert sniff_format(SAMPLE_GIF) == "GIF"
    assert sniff_format(encode(Image.new("RGB", (2, 2)), "WEBP")) == "WEBP"
    assert sniff_format(b"RIFF\0\0\0\0WAVE") is None
    assert sniff_format(b"") is None
