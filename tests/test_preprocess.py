"""The shared preprocessing on real-world image quirks and bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from woof.preprocess import ImageError, default_spec, load_image, preprocess, softmax, top_k

from .conftest import val_images

SPEC = default_spec(224)


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo(data_root) -> Image.Image:
    return Image.open(val_images(data_root, 1)[0][0]).convert("RGB")


def test_output_is_normalised_chw_float32(photo):
    x = preprocess(photo, SPEC)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert -1.0 <= x.min() < 0 < x.max() <= 1.0  # mean = std = 0.5 maps [0, 1] to [-1, 1]


def test_file_bytes_and_image_give_identical_arrays(data_root, photo):
    path = val_images(data_root, 1)[0][0]
    assert np.array_equal(preprocess(path, SPEC), preprocess(path.read_bytes(), SPEC))


def test_exif_orientation_is_applied(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = _bytes(photo, "JPEG", exif=exif.tobytes())
    img = load_image(data)
    assert img.size == (photo.height, photo.width)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16"])
def test_any_colour_mode_becomes_rgb(photo, mode):
    if mode == "I;16":
        arr = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
        img = Image.fromarray(arr)
        fmt = "PNG"
    else:
        img = photo.convert(mode)
        fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    out = load_image(_bytes(img, fmt))
    assert out.mode == "RGB" and out.size == photo.size
    if mode == "I;16":  # 16-bit values are scaled down, not clipped to white
        assert 20 < np.asarray(out).mean() < 235


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    assert np.asarray(load_image(_bytes(img, "PNG")))[0, 0].tolist() == [255, 255, 255]


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (40, 30), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert np.asarray(load_image(buf.getvalue()))[0, 0].tolist()[0] > 200


def test_large_jpeg_decodes_at_reduced_scale_but_not_below_the_needed_size(photo):
    big = photo.resize((photo.width * 8, photo.height * 8))
    img = load_image(_bytes(big, "JPEG"), target_size=256)
    assert min(img.size) >= 256 and img.width < big.width


@pytest.mark.parametrize("data,reason", [
    (b"", "not an image"),
    (b"hello, I am a text file", "not an image"),
    (b"%PDF-1.4 fake", "not an image"),
])
def test_non_images_are_rejected_clearly(data, reason):
    with pytest.raises(ImageError, match=reason):
        load_image(data)


def test_truncated_jpeg_is_rejected(photo):
    data = _bytes(photo, "JPEG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2])


def test_decompression_bomb_is_rejected_before_decoding():
    img = Image.new("L", (9000, 9000))  # 81 MP, compresses to a few KB
    data = _bytes(img, "PNG")
    assert len(data) < 200_000
    with pytest.raises(ImageError, match="limit"):
        load_image(data)


@pytest.mark.parametrize("size", [(1, 1), (20000, 1)])
def test_degenerate_sizes_are_rejected(size):
    with pytest.raises(ImageError, match="too small"):
        load_image(_bytes(Image.new("RGB", size), "PNG"))


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "nope.jpg")


def test_top_k_objects_are_sorted_and_named():
    classes = [{"wnid": f"n{i}", "breed": f"b{i}"} for i in range(4)]
    result = top_k(softmax(np.array([0.0, 3.0, 1.0, 2.0])), classes, k=3)
    assert [r["wnid"] for r in result] == ["n1", "n3", "n2"]
    assert set(result[0]) == {"breed", "wnid", "probability"}
    assert result[0]["probability"] > result[1]["probability"] > result[2]["probability"]


def test_preprocess_module_imports_without_torch():
    import subprocess
    import sys

    code = ("import sys; import woof.preprocess; "
            "bad = [m for m in ('torch', 'torchvision', 'timm') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
