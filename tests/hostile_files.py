"""Hostile and broken inputs shared by the fault tests: pickle payloads, broken checkpoints, bad images."""
from __future__ import annotations

import io
import os
import pathlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: a real code-execution payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like our checkpoints whose model config runs code when unpickled."""
    torch.save({"format": "crm-lab-checkpoint", "version": 1, "model_config": Payload(marker)}, path)
    return path


def broken_checkpoints(good: Path, folder: Path) -> dict[str, Path]:
    """Empty, truncated, random-bytes and foreign ``.pt`` files made from a good checkpoint."""
    data = good.read_bytes()
    files = {"empty": b"", "truncated": data[: len(data) // 2], "garbage": os.urandom(4096)}
    out = {}
    for name, content in files.items():
        out[name] = folder / f"{name}.pt"
        out[name].write_bytes(content)
    out["not_ours"] = folder / "not_ours.pt"
    torch.save({"state_dict": {}}, out["not_ours"])
    return out


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def _exif_rotated(path: Path) -> Path:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[274] = 6  # "rotate 90° clockwise to display"
    return _save(image, path, exif=exif.tobytes())


def _truncated(image: Image.Image, path: Path, fmt: str) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def _text_renamed(path: Path) -> Path:
    path.write_text("hello, I am a text file with an image's name")
    return path


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8))


#: name -> (builder(folder) -> path, accepted). Accepted images must give a result; the others
#: a clear message. Kept small so that a test can push each one through the whole app.
IMAGE_ZOO: dict[str, tuple[Callable[[Path], Path], bool]] = {
    "text_renamed_png": (lambda d: _text_renamed(d / "notes.png"), False),
    "corrupt_png": (lambda d: _truncated(_noise((64, 64)), d / "corrupt.png", "PNG"), False),
    "corrupt_jpeg": (lambda d: _truncated(_noise((64, 64)), d / "corrupt.jpg", "JPEG"), False),
    "rgba_png": (lambda d: _save(Image.new("RGBA", (30, 20), (10, 200, 30, 128)), d / "rgba.png"), True),
    "grayscale_png": (lambda d: _save(Image.new("L", (30, 20), 128), d / "gray.png"), True),
    "png_16bit": (lambda d: _save(Image.fromarray(np.full((20, 30), 40000, np.uint16)), d / "deep.png"), True),
    "cmyk_jpeg": (lambda d: _save(Image.new("CMYK", (30, 20), (0, 255, 255, 0)), d / "cmyk.jpg"), True),
    "exif_rotated_jpeg": (lambda d: _exif_rotated(d / "rotated.jpg"), True),
    "one_pixel_png": (lambda d: _save(Image.new("RGB", (1, 1), (0, 255, 0)), d / "one.png"), True),
    # 100 megapixels, a few hundred KB on disk: refused by the pixel limit before it is decoded.
    "10000x10000_png": (lambda d: _save(Image.new("L", (10000, 10000), 0), d / "huge.png"), False),
}
