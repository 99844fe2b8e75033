"""Image formats, defined once: the name a format goes by (what :func:`fluxserve.predictors.images.sniff_image`
returns, and ``output_format``'s ``jpg``), its Pillow name, MIME type and file extension."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImageFormat:
    """One image format."""

    pil: str
    mime: str
    extension: str


IMAGE_FORMATS: dict[str, ImageFormat] = {
    "png": ImageFormat("PNG", "image/png", ".png"),
    "jpeg": ImageFormat("JPEG", "image/jpeg", ".jpg"),
    "webp": ImageFormat("WEBP", "image/webp", ".webp"),
    "gif": ImageFormat("GIF", "image/gif", ".gif"),
}
# ``output_format`` says "jpg" (as Replicate's FLUX models do).
IMAGE_FORMATS["jpg"] = IMAGE_FORMATS["jpeg"]

_BY_MIME = {f.mime: f for f in IMAGE_FORMATS.values()}
_BY_EXTENSION = {f.extension: f for f in IMAGE_FORMATS.values()} | {".jpeg": IMAGE_FORMATS["jpeg"]}
#: Other files the blob store serves (JSON and text outputs).
_OTHER_TYPES = {".json": "application/json", ".txt": "text/plain; charset=utf-8"}
OCTET_STREAM = "application/octet-stream"


def extension_for_mime(mime: str) -> str | None:
    """``.png`` for ``image/png`` …; None for a type that is not one of the image formats."""
    found = _BY_MIME.get(mime.split(";")[0].strip().lower())
    return found.extension if found else None


def content_type_for(name: str) -> str:
    """The Content-Type served for a file called ``name``."""
    suffix = Path(name).suffix.lower()
    found = _BY_EXTENSION.get(suffix)
    return found.mime if found else _OTHER_TYPES.get(suffix, OCTET_STREAM)
