"""The side-by-side picture of a settings comparison: one PNG per source, I | Î under A | Î under B per prompt row.

Layout (all sizes in pixels; :func:`grid_size` computes them):

* every tile is the image scaled so that its long side is :data:`TILE` (aspect kept), tiles :data:`GAP` apart;
* a header strip of :data:`HEADER` above the columns names them ("I · <class>", "Î A · <setting>", ...);
* each prompt row has a caption strip of :data:`CAPTION` above its tiles (the prompt, the seed, the SSIM of Î_A vs
  Î_B and the drift of each).

So a grid of ``r`` rows for a source of ``h × w`` is ``3·tw + 4·GAP`` wide and ``HEADER + r·(CAPTION + th + GAP)``
high, ``(th, tw)`` being :func:`tile_size`. Pure: arrays in, an array out; saving is the caller's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["CAPTION", "GAP", "HEADER", "TILE", "GridRow", "draw_grid", "grid_size", "tile_size"]

TILE = 256  # long side of every tile
GAP = 4  # space around and between tiles
HEADER = 22  # the column titles
CAPTION = 18  # each row's caption
COLUMNS = 3  # I, Î_A, Î_B
_BACKGROUND = (255, 255, 255)
_INK = (20, 20, 20)
_FONT_SIZE = 12


@dataclass(frozen=True)
class GridRow:
    """One prompt's row: its caption and the two generated images (the source's size)."""

    caption: str
    image_a: np.ndarray
    image_b: np.ndarray


def tile_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of a tile for an image of this size: long side TILE, aspect kept, each side >= 1."""
    scale = TILE / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def grid_size(height: int, width: int, rows: int) -> tuple[int, int]:
    """(width, height) of the grid PNG for a source of ``height × width`` and `rows` prompt rows."""
    th, tw = tile_size(height, width)
    return COLUMNS * tw + (COLUMNS + 1) * GAP, HEADER + rows * (CAPTION + th + GAP)


def _font() -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, bool]:
    """The captions' font, and whether it has the letter Î: matplotlib's DejaVu Sans (a dependency already) when
    found, else Pillow's own font (no Î: it is written I^)."""
    try:
        from matplotlib import get_data_path

        return ImageFont.truetype(str(Path(get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), _FONT_SIZE), True
    except (ImportError, OSError):
        pass
    try:
        return ImageFont.load_default(size=_FONT_SIZE), False
    except (TypeError, OSError):  # an older Pillow, or one built without FreeType: the bitmap font
        return ImageFont.load_default(), False


def _fitted(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """`text`, cut with an ellipsis so that it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _tile(image: np.ndarray, size: tuple[int, int]) -> Image.Image:
    th, tw = size
    tile = Image.fromarray(np.ascontiguousarray(image))
    return tile if tile.size == (tw, th) else tile.resize((tw, th), Image.Resampling.LANCZOS)


def draw_grid(original: np.ndarray, rows: Sequence[GridRow], titles: Sequence[str]) -> np.ndarray:
    """The comparison grid of one source as a uint8 (H, W, 3) array; `titles` name the three columns."""
    height, width = original.shape[:2]
    th, tw = tile_size(height, width)
    canvas = Image.new("RGB", grid_size(height, width, len(rows)), _BACKGROUND)
    (font, has_hat), draw = _font(), ImageDraw.Draw(canvas)
    if not has_hat:
        titles = [t.replace("Î", "I^") for t in titles]
    for column, title in enumerate(titles):
        x = GAP + column * (tw + GAP)
        draw.text((x, 4), _fitted(draw, title, tw, font), fill=_INK, font=font)
    source = _tile(original, (th, tw))
    for r, row in enumerate(rows):
        y = HEADER + r * (CAPTION + th + GAP)
        draw.text((GAP, y + 2), _fitted(draw, row.caption, canvas.width - 2 * GAP, font), fill=_INK, font=font)
        for column, image in enumerate((source, _tile(row.image_a, (th, tw)), _tile(row.image_b, (th, tw)))):
            canvas.paste(image, (GAP + column * (tw + GAP), y + CAPTION))
    return np.asarray(canvas)
