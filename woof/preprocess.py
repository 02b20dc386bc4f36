"""The one preprocessing definition: evaluation, `woof predict` and the TorchServe handler use it.

Only numpy and Pillow are imported, so the TorchServe handler can ship this file with
`--extra-files`. The transform is described by a small dict that lives in each model card:

    {"input_size": 224, "resize": 256, "interpolation": "bicubic",
     "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}

meaning: resize the shorter side to `resize`, centre-crop `input_size` x `input_size`, scale to
[0, 1], subtract mean, divide by std, CHW float32.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Decompression-bomb guard: 40 MP covers any phone photo; a 20000x20000 PNG bomb does not pass.
MAX_PIXELS = int(os.environ.get("WOOF_MAX_PIXELS", 40_000_000))
MIN_SIDE = 8

_INTERPOLATION = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

REQUIRED_KEYS = ("input_size", "resize", "interpolation", "mean", "std")


class ImageError(ValueError):
    """The input is not a usable image; the message says why in plain words."""


def default_spec(input_size: int = 224, crop_pct: float = 0.875, mean=(0.5,) * 3, std=(0.5,) * 3,
                 interpolation: str = "bicubic") -> dict[str, Any]:
    return {
        "input_size": int(input_size),
        "resize": int(round(input_size / crop_pct)),
        "interpolation": interpolation,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
    }


def check_spec(spec: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in REQUIRED_KEYS if k not in spec]
    if missing:
        raise ValueError(f"preprocessing spec is missing {', '.join(missing)}")
    if spec["interpolation"] not in _INTERPOLATION:
        raise ValueError(f"unknown interpolation {spec['interpolation']!r}; use one of {sorted(_INTERPOLATION)}")
    if spec["resize"] < spec["input_size"]:
        raise ValueError("preprocessing spec: resize must be >= input_size")
    return spec


def load_image(source: str | os.PathLike | bytes, target_size: int | None = None,
               max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open a real-world photo as RGB: EXIF orientation, grey/CMYK/palette/alpha/16-bit handled.

    `target_size` (the shorter side the model needs) lets big JPEGs decode at reduced scale
    (draft mode), which is much faster and uses far less memory.
    """
    try:
        fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as e:
        raise ImageError(f"cannot read {source}: {e.strerror}") from None
    with fp:
        try:
            with Image.open(fp) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageError(f"image is {width}x{height} pixels, more than the limit of {max_pixels:,}")
                if min(width, height) < MIN_SIDE:
                    raise ImageError(f"image is {width}x{height} pixels, too small to classify")
                if target_size and img.format == "JPEG":
                    img.draft(img.mode, (target_size, target_size))  # keeps the shorter side >= target_size
                img.seek(0)  # first frame of animated images
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError("not an image, or an image format Pillow cannot read") from None
        except Image.DecompressionBombError:
            raise ImageError(f"image exceeds the pixel limit of {max_pixels:,}") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"image is corrupt or truncated ({e})") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / scale * 255.0, 0, 255).astype(np.uint8))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    else:
        img.load()
    return img


def resize_and_crop(img: Image.Image, spec: dict[str, Any]) -> Image.Image:
    """Shorter side to spec['resize'], then the centre input_size square."""
    size, resize = spec["input_size"], spec["resize"]
    width, height = img.size
    scale = resize / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    img = img.resize((new_w, new_h), _INTERPOLATION[spec["interpolation"]])
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_array(img: Image.Image, spec: dict[str, Any]) -> np.ndarray:
    """RGB image (already input_size) -> normalised CHW float32 array."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def preprocess(source: str | os.PathLike | bytes | Image.Image, spec: dict[str, Any]) -> np.ndarray:
    """File path, bytes or PIL image -> model input (CHW float32)."""
    img = source if isinstance(source, Image.Image) else load_image(source, target_size=spec["resize"])
    if img.mode != "RGB":
        img = _to_rgb(img)
    return to_array(resize_and_crop(img, spec), spec)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top_k(probabilities: np.ndarray, classes: list[dict[str, str]], k: int = 3) -> list[dict[str, Any]]:
    """One image's class probabilities -> the prediction objects woof uses everywhere."""
    order = np.argsort(-probabilities)[:k]
    return [
        {"breed": classes[i]["breed"], "wnid": classes[i]["wnid"], "probability": round(float(probabilities[i]), 4)}
        for i in order
    ]
