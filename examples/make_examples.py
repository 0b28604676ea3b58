"""Regenerate the app's example images (procedural, made by this script; released under CC0 with the project).

    python examples/make_examples.py

They are plain pictures with clear structure (sky, hills, sun, house; a still life of shapes) so that the
half-and-half masks and the fractal blend are easy to see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent


def landscape(width: int = 384, height: int = 256, seed: int = 0) -> Image.Image:
    """Sky gradient, sun, two rows of hills and a small house."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    sky = (1 - y) * np.array([70, 130, 210]) + y * np.array([250, 200, 150])
    img = Image.fromarray(np.broadcast_to(sky, (height, width, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    draw.ellipse((270, 40, 330, 100), fill=(255, 225, 120))
    for base, amp, colour in ((150, 30, (70, 120, 70)), (190, 20, (40, 95, 45))):
        xs = np.arange(width + 1)
        phase = rng.uniform(0, 2 * np.pi)
        ys = base + amp * np.sin(xs / width * 2 * np.pi * 1.5 + phase)
        draw.polygon([(0, height)] + [(int(x), int(v)) for x, v in zip(xs, ys)] + [(width, height)], fill=colour)
    draw.rectangle((80, 170, 140, 220), fill=(200, 70, 60))
    draw.polygon([(72, 172), (110, 138), (148, 172)], fill=(110, 50, 40))
    draw.rectangle((102, 192, 118, 220), fill=(80, 50, 30))
    return img.filter(ImageFilter.SMOOTH)


def still_life(size: int = 256, seed: int = 1) -> Image.Image:
    """A table, a vase, fruit and a checked cloth."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), (235, 228, 210))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 170, size, size), fill=(150, 100, 60))
    for i in range(0, size, 16):
        for j in range(200, size, 16):
            if (i // 16 + j // 16) % 2 == 0:
                draw.rectangle((i, j, i + 15, j + 15), fill=(200, 60, 60))
    draw.ellipse((60, 70, 120, 180), fill=(60, 90, 170))
    draw.rectangle((78, 40, 102, 80), fill=(60, 90, 170))
    for cx, colour in ((150, (230, 180, 40)), (185, (200, 40, 40)), (215, (120, 180, 60))):
        cy = 160 + int(rng.integers(-4, 4))
        draw.ellipse((cx - 16, cy - 16, cx + 16, cy + 16), fill=colour)
    return img.filter(ImageFilter.SMOOTH)


def main() -> None:
    landscape().save(HERE / "landscape.png", optimize=True)
    still_life().save(HERE / "still_life.png", optimize=True)


if __name__ == "__main__":
    main()
