"""Images in and out: inputs checked and decoded into RGB :class:`PIL.Image.Image`, outputs encoded to files.

The worker fetches every ``uri`` / ``uri_array`` input before a predictor runs and hands over the raw file
content (``bytes``, or ``list[bytes]``); predictors decode it here. Only PNG, JPEG, WEBP and GIF are accepted
(the formats Replicate's FLUX models document), chosen from the file's magic bytes, never from a name or a
content type. The size is checked from the header before any pixel is decoded, so a small file that claims
huge dimensions is refused without allocating its pixels. Every failure is an :class:`ImageInputError` whose
message starts with the input's name, e.g. ``input_image: not a PNG, JPEG, WEBP or GIF image``.

Outputs are encoded by :func:`save_images` (WEBP, JPEG or PNG; several images in parallel, since Pillow
releases the GIL while encoding).

Pillow only, no torch: :func:`sniff_image` is cheap enough for the API to call while creating a prediction.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxserve.formats import IMAGE_FORMATS

if TYPE_CHECKING:
    from PIL.Image import Image

#: Largest accepted image, in pixels (4096 × 4096). Decoded RGBA at this size is 64 MiB.
MAX_IMAGE_PIXELS = 4096 * 4096
#: libwebp effort 0-6 (Pillow's default is 4). Measured at q80 on 1024² images, 2 CPU cores:
#: photos 24/36/80 ms and 163/134/128 KiB for methods 0/2/4; noise 41/60/112 ms. Method 2 halves the
#: encode time of the default for ~5% more bytes; method 0 saves another ~12 ms but adds ~25% bytes.
WEBP_METHOD = 2


_NOT_AN_IMAGE = "not a PNG, JPEG, WEBP or GIF image"
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


class ImageInputError(ValueError):
    """An image input cannot be used; the message names the input and says why."""


def sniff_image(data: bytes) -> str | None:
    """The format of ``data`` from its magic bytes: "png", "jpeg", "webp", "gif", or None for anything else.

    Looks at the first 12 bytes only; it does not prove the rest of the file is valid (:func:`decode_image` does).
    """
    head = bytes(data[:12])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def decode_image(data: bytes, field: str) -> Image:
    """Decode one image input to an RGB image; raise :class:`ImageInputError` naming ``field`` if it is unusable.

    Refuses other formats, damaged or truncated files and images over :data:`MAX_IMAGE_PIXELS`. Animated GIF or
    WEBP: the first frame. EXIF orientation is applied (a phone photo comes out the way it is displayed), and
    transparent pixels are composited onto white rather than keeping whatever colour they happen to store.
    """
    from PIL import Image as PILImage
    from PIL import ImageOps

    if not data:
        raise ImageInputError(f"{field}: the file is empty")
    fmt = sniff_image(data)
    if fmt is None:
        raise ImageInputError(f"{field}: {_NOT_AN_IMAGE}")
    name = IMAGE_FORMATS[fmt].pil
    try:
        # Pillow warns (and past twice its limit, raises) on huge headers; make both an error so nothing is decoded.
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            image = PILImage.open(BytesIO(data), formats=[name])
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as exc:
        raise ImageInputError(f"{field}: {_describe_size(data, fmt, str(exc))} {_over_limit()}") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError) as exc:
        # Pillow reports a bad header with any of these, depending on the format and the damage.
        raise ImageInputError(f"{field}: the {name} image is damaged or truncated ({_reason(exc)})") from None

    width, height = image.size
    if width < 1 or height < 1:
        raise ImageInputError(f"{field}: the {name} image has no pixels ({width}×{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageInputError(f"{field}: {width}×{height} pixels {_over_limit()}")
    try:
        image.seek(0)  # first frame of an animation
        image.load()
        return _to_rgb(ImageOps.exif_transpose(image))
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError) as exc:
        raise ImageInputError(f"{field}: the {name} image is damaged or truncated ({_reason(exc)})") from None


def _to_rgb(image: Image) -> Image:
    from PIL import Image as PILImage

    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
    return PILImage.alpha_composite(background, rgba).convert("RGB")


def _over_limit() -> str:
    return f"is more than the {MAX_IMAGE_PIXELS}-pixel limit (4096×4096)"


def _describe_size(data: bytes, fmt: str, pillow_message: str) -> str:
    """``W×H pixels`` from a PNG or GIF header, else the pixel count from Pillow's bomb message."""
    if fmt == "png" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return f"{width}×{height} pixels"
    if fmt == "gif" and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return f"{width}×{height} pixels"
    match = _BOMB_PIXELS.search(pillow_message)
    return f"{match.group(1)} pixels" if match else "the image"


def _reason(exc: BaseException) -> str:
    # Pillow's "cannot identify image file <_io.BytesIO object at 0x…>" would show a meaningless address.
    text = " ".join(_OBJECT_REPR.sub("", str(exc)).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return text or type(exc).__name__


# --- outputs ---------------------------------------------------------------------------------------------------


def save_images(images: Sequence[Any], paths: Sequence[Path], fmt: str, quality: int) -> None:
    """Encode PIL ``images`` to ``paths`` as ``fmt`` ("webp", "jpg" or "png") at ``quality``, in parallel."""
    save = _saver(fmt, quality)
    if len(images) == 1:
        save(images[0], paths[0])
        return
    with ThreadPoolExecutor(max_workers=min(len(images), os.cpu_count() or 1)) as pool:  # Pillow drops the GIL
        list(pool.map(save, images, paths))


def _saver(fmt: str, quality: int) -> Callable[[Any, Path], None]:
    pil_format = IMAGE_FORMATS[fmt].pil
    options: dict[str, Any]
    if pil_format == "WEBP":
        options = {"quality": quality, "method": WEBP_METHOD}
    elif pil_format == "JPEG":
        options = {"quality": quality, "optimize": True}
    else:
        options = {}

    def save(image: Any, path: Path) -> None:
        image.save(path, format=pil_format, **options)

    return save
