"""Sample grids: a generation's images as one PNG."""
from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from collapse_jax.workdir import write_atomically


def save_grid(images: np.ndarray, path: pathlib.Path, columns: int = 8, scale: int = 4) -> None:
  """Writes ``images [n, h, w, c]`` in [-1, 1] as a grid, each pixel ``scale`` x ``scale``."""
  n, h, w, c = images.shape
  rows = -(-n // columns)
  grid = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1, c), np.float32)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + col * (w + 1):1 + col * (w + 1) + w] = (
        (np.clip(np.nan_to_num(image), -1, 1) + 1) / 2)  # a diverged model's nan: grey
  pixels = (grid * 255).round().astype(np.uint8)
  pixels = pixels.repeat(scale, 0).repeat(scale, 1)
  image = Image.fromarray(pixels[..., 0] if c == 1 else pixels)
  # Every host of a multi-host run draws the same grid.
  write_atomically(path, lambda f: image.save(f, format="PNG"))
