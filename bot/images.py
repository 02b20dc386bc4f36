"""Check and shrink images before they go to the gateway (Pillow; runs in a worker thread).

Photos from Telegram are already small JPEGs. Images sent as files can be anything up to 20 MB,
so they are decoded here first (a corrupt file gets a friendly answer instead of a gateway error)
and re-encoded as a JPEG of at most MAX_SIDE px when they are large, so the gateway's upload limit
is never what a user runs into.
"""

from __future__ import annotations

import io
import warnings
from pathlib import PurePath

from PIL import Image, ImageOps

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # bots cannot download bigger files (Bot API getFile)
MAX_SIDE = 1280  # the models look at 224-260 px; more only costs upload time
REENCODE_ABOVE_BYTES = 2 * 1024 * 1024
MAX_PIXELS = 200_000_000  # JPEGs are decoded at a reduced scale (draft), so big phone photos are fine
MAX_PIXELS_FULL_DECODE = 50_000_000  # PNG/WebP are decoded in full
IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
IMAGE_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".jpe": "image/jpeg", ".png": "image/png",
                  ".webp": "image/webp"}
FORMAT_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class BadImage(Exception):
    """The bytes are not a readable JPEG, PNG or WebP image."""


def is_image_document(mime_type: str | None, file_name: str | None) -> bool:
    if mime_type in IMAGE_TYPES:
        return True
    suffix = PurePath(file_name or "").suffix.lower()
    return mime_type in (None, "", "application/octet-stream") and suffix in IMAGE_SUFFIXES


def prepare(data: bytes) -> tuple[bytes, str, str]:
    """Decode `data` fully; return (bytes to upload, file name, content type). Raises BadImage."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            fmt = img.format
            if fmt not in FORMAT_TYPES:
                raise BadImage(f"unsupported image format {fmt}")
            width, height = img.size
            limit = MAX_PIXELS if fmt in ("JPEG", "MPO") else MAX_PIXELS_FULL_DECODE
            if width * height > limit:
                raise BadImage(f"{width}x{height} px is too many pixels")
            big = max(width, height) > MAX_SIDE or len(data) > REENCODE_ABOVE_BYTES
            if big and fmt in ("JPEG", "MPO"):
                img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # decode at 1/2, 1/4 or 1/8 scale
            img.load()  # a truncated or corrupt file fails here
        except BadImage:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise BadImage(f"{type(e).__name__}: {e}") from None
        if not big:
            return data, f"image.{fmt.lower().replace('mpo', 'jpg')}", FORMAT_TYPES[fmt]
        img = ImageOps.exif_transpose(img)  # the re-encoded JPEG carries no EXIF orientation
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            img = Image.new("RGB", rgba.size, (255, 255, 255))
            img.paste(rgba, mask=rgba.getchannel("A"))
        elif img.mode != "RGB":
            img = img.convert("RGB")
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=90)
        return out.getvalue(), "image.jpg", "image/jpeg"
