"""Image sizes: Replicate's aspect-ratio tables, megapixel choices, output formats, img2img and Kontext sizing."""

from __future__ import annotations

#: Most images one ``uri_array`` input takes (each is fetched and decoded before the prediction runs).
MAX_URI_ARRAY_ITEMS = 4

#: Replicate's schnell/dev size table (width, height) at 1 megapixel; hand-picked, not computed.
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}

OUTPUT_FORMATS: tuple[str, ...] = ("webp", "jpg", "png")
MEGAPIXELS: tuple[str, ...] = ("1", "0.25")

#: FLUX.1 Kontext's size table (width, height) for an explicit ``aspect_ratio`` [cog-flux-kontext flux/util.py].
KONTEXT_ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1328, 800),
    "21:9": (1568, 672),
    "3:2": (1248, 832),
    "2:3": (832, 1248),
    "4:5": (944, 1104),
    "5:4": (1104, 944),
    "3:4": (880, 1184),
    "4:3": (1184, 880),
    "9:16": (800, 1328),
    "9:21": (672, 1568),
}
#: The ``aspect_ratio`` value that makes Kontext follow its input image.
MATCH_INPUT_IMAGE = "match_input_image"

#: The (width, height) pairs Kontext was trained on; an input image is snapped to the one closest in aspect ratio
#: (the same list as diffusers' ``PREFERRED_KONTEXT_RESOLUTIONS`` and cog-flux-kontext's ``PREFERED_…``).
PREFERRED_KONTEXT_RESOLUTIONS: tuple[tuple[int, int], ...] = (
    (672, 1568),
    (688, 1504),
    (720, 1456),
    (752, 1392),
    (800, 1328),
    (832, 1248),
    (880, 1184),
    (944, 1104),
    (1024, 1024),
    (1104, 944),
    (1184, 880),
    (1248, 832),
    (1328, 800),
    (1392, 752),
    (1456, 720),
    (1504, 688),
    (1568, 672),
)

#: flux-dev img2img: the input image is scaled down to fit this square before rounding to multiples of 16.
IMG2IMG_MAX_SIDE = 1440


def image_size(aspect_ratio: str, megapixels: str = "1") -> tuple[int, int]:
    """Return (width, height) for a schnell/dev ``aspect_ratio`` and ``megapixels`` ("1" or "0.25")."""
    width, height = ASPECT_RATIOS[aspect_ratio]
    if megapixels == "0.25":
        return width // 2, height // 2
    return width, height


def img2img_size(width: int, height: int) -> tuple[int, int]:
    """flux-dev's output size for an input image of ``width`` × ``height`` (cog-flux's rule).

    Scale down (never up) to fit :data:`IMG2IMG_MAX_SIDE` square, truncating to whole pixels, then round each
    side to the nearest multiple of 16 with Python's ``round`` (ties to even: 1000 → 992, as in cog-flux). A side
    that would round to 0 (extreme aspect ratios) becomes 16.
    """
    scale = min(IMG2IMG_MAX_SIDE / width, IMG2IMG_MAX_SIDE / height, 1)
    if scale < 1:
        width, height = int(width * scale), int(height * scale)
    return max(16, round(width / 16) * 16), max(16, round(height / 16) * 16)


def kontext_snap(width: int, height: int) -> tuple[int, int]:
    """The :data:`PREFERRED_KONTEXT_RESOLUTIONS` entry closest in aspect ratio to ``width`` × ``height``.

    Ties go to the smaller (width, height) pair, as ``min`` over (distance, w, h) tuples does in diffusers and
    cog-flux-kontext.
    """
    ratio = width / height
    _, w, h = min((abs(ratio - w / h), w, h) for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
    return w, h


def kontext_image_size(aspect_ratio: str, input_size: tuple[int, int]) -> tuple[int, int]:
    """Kontext's output (width, height): the snapped input size for ``match_input_image``, else the table's."""
    if aspect_ratio == MATCH_INPUT_IMAGE:
        return kontext_snap(*input_size)
    return KONTEXT_ASPECT_RATIOS[aspect_ratio]


#: FLUX.2's ``aspect_ratio`` choices besides ``match_input_image`` and ``custom`` (Replicate's flux-2-dev list).
FLUX2_ASPECT_RATIOS: tuple[str, ...] = ("1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3")
#: The ``aspect_ratio`` value that takes ``width`` and ``height`` as given (flux-2-dev).
CUSTOM = "custom"
#: One "megapixel" in the FLUX size tables: 1024 × 1024 pixels.
MEGAPIXEL_AREA = 1024 * 1024


def _ratio(aspect_ratio: str) -> float:
    width, height = (int(part) for part in aspect_ratio.split(":"))
    return width / height


def round_to(value: float, multiple: int) -> int:
    """``value`` rounded to the nearest multiple of ``multiple`` (at least one multiple)."""
    return max(multiple, round(value / multiple) * multiple)


def flux2_size(
    aspect_ratio: str,
    megapixels: float = 1.0,
    *,
    reference: tuple[int, int] | None = None,
    custom: tuple[int | None, int | None] = (None, None),
    multiple: int = 16,
) -> tuple[int, int]:
    """The (width, height) of a FLUX.2 output.

    ``aspect_ratio`` is ``W:H`` (the area is ``megapixels`` × 1024², each side rounded to a multiple of
    ``multiple``), ``match_input_image`` (the first reference image's ratio at that area; 1:1 without one) or
    ``custom`` (``custom`` width and height rounded to a multiple of ``multiple``, 1024 where not given).
    """
    if aspect_ratio == CUSTOM:
        width, height = (1024 if side is None else side for side in custom)
        return round_to(width, multiple), round_to(height, multiple)
    if aspect_ratio == MATCH_INPUT_IMAGE:
        ratio = reference[0] / reference[1] if reference else 1.0
    else:
        ratio = _ratio(aspect_ratio)
    area = megapixels * MEGAPIXEL_AREA
    width = (area * ratio) ** 0.5
    return round_to(width, multiple), round_to(width / ratio, multiple)
