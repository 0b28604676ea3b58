"""The previews a web server may serve: copies of a page's thumbnails outside the workspace, selected ones marked.

The workspace itself is never served. :func:`served_copies` links (or copies) each preview into a folder the app
serves, named by content so each copy is made once; a selected item's copy gets a green frame and tick drawn on it
(:func:`marked_preview`), so the mark is in the picture itself.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SELECTED_COLOUR", "marked_preview", "served_copies"]

SELECTED_COLOUR = (22, 163, 74)  # the frame and tick drawn on a selected item's served preview


def served_copies(paths: Sequence[Path], folder: Path, selected: Sequence[bool] | None = None) -> list[str]:
    """Copies of previews in `folder` (one a web server may serve; the workspace itself is never served), hard
    links where the file system allows; a `selected` one gets a green frame and tick drawn on it, so the mark is
    in the picture itself. Previews are named by content, so each copy is made once."""
    folder = Path(folder)
    selected = list(selected or [False] * len(paths))
    out = []
    for path, mark in zip(paths, selected):
        path = Path(path)
        target = folder / (f"{path.stem}-selected.png" if mark else path.name)
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            temp = folder / f".tmp-{os.getpid()}-{threading.get_ident()}-{target.name}"
            if mark:
                marked_preview(path, temp)
            else:
                try:
                    os.link(path, temp)
                except OSError:
                    shutil.copyfile(path, temp)
            os.replace(temp, target)
        out.append(str(target))
    return out


def marked_preview(path: Path, target: Path) -> None:
    """The preview at `path` with a frame and a tick in the top-right corner, written to `target` as PNG."""
    from PIL import Image, ImageDraw

    with Image.open(path) as source:
        image = source.convert("RGB")
    draw = ImageDraw.Draw(image)
    w, h = image.size
    draw.rectangle([0, 0, w - 1, h - 1], outline=SELECTED_COLOUR, width=max(4, min(w, h) // 12))
    box = max(16, min(w, h) // 3)
    draw.rectangle([w - box, 0, w - 1, box], fill=SELECTED_COLOUR)
    tick = [(w - box + box * 0.2, box * 0.52), (w - box + box * 0.42, box * 0.74), (w - box + box * 0.82, box * 0.28)]
    draw.line(tick, fill="white", width=max(3, box // 7), joint="curve")
    image.save(target, format="PNG", compress_level=1)
