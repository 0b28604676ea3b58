"""Fractal library (Algorithm 1, line 8) and a seeded procedural fractal generator.

* :class:`FractalLibrary` loads any folder of images (for example PixMix's fractal set), lazily: files are
  listed and their headers checked up front (bad files skipped with a warning), pixels are decoded on first use.
  ``fit(id, h, w)`` resizes to cover (h, w) with Pillow's bicubic filter, centre-crops (:func:`fit_to`), and
  caches the result per (id, h, w), so each fractal is resized once per image size. Returned arrays are
  read-only.
* :func:`generate_fractal` draws coloured fractals, bright structure on black, from a seed, with vectorised numpy:
  ``"ifs"`` (chaos game over 2-5 random contractive affine maps with flame-style nonlinear variations and
  colour mixing, like PixMix's fractals), ``"julia"`` and ``"mandelbrot"`` (escape time, smooth colouring with a
  random cosine palette). The same seed gives the same bytes.

Regenerate the shipped set: ``python -m diffusemix_core.engine.fractals --out fractals --count 32 --seed 0``.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
import threading
from typing import Mapping, Sequence

import numpy as np
from cachetools import LRUCache
from PIL import Image

from ..checks import check_int
from ..errors import BadArgumentError, BadImageError
from .shipped import shipped
from .images import is_image_path, load_image

__all__ = ["FRACTAL_KINDS", "DEFAULT_FRACTAL_DIR", "generate_fractal", "fit_to", "FractalLibrary", "main"]

log = logging.getLogger(__name__)

FRACTAL_KINDS: tuple[str, ...] = ("ifs", "julia", "mandelbrot")
DEFAULT_FRACTAL_DIR: Path = shipped("fractals")
# procedural libraries cycle through this pattern: half IFS (PixMix-like), half escape-time
_LIBRARY_PATTERN: tuple[str, ...] = ("ifs", "julia", "ifs", "mandelbrot")


# --------------------------------------------------------------------------------------------------- generator
def generate_fractal(seed: int, size: int = 256, kind: str | None = None) -> np.ndarray:
    """Return a coloured fractal as uint8 (size, size, 3); ``kind`` None picks one of FRACTAL_KINDS from the seed."""
    seed = check_int("seed", seed, minimum=0)
    size = check_int("size", size, minimum=8)
    if kind is None:  # drawn from its own stream, so generate_fractal(s) == generate_fractal(s, kind=<that kind>)
        picker = np.random.default_rng(np.random.SeedSequence([int(seed), 0x4B494E44]))
        kind = FRACTAL_KINDS[int(picker.integers(len(FRACTAL_KINDS)))]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x46524143]))
    if kind == "ifs":
        return _ifs(rng, int(size))
    if kind == "julia":
        return _julia(rng, int(size))
    if kind == "mandelbrot":
        return _mandelbrot(rng, int(size))
    raise BadArgumentError(f"Unknown fractal kind {kind!r}; use one of {', '.join(FRACTAL_KINDS)} or None.")


def _palette(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Random cosine palette (a + b·cos(2π(c·t + d))) parameters, saturated and bright."""
    a = rng.uniform(0.45, 0.6, 3)
    b = rng.uniform(0.35, 0.5, 3)
    c = rng.uniform(0.6, 1.6, 3) * rng.choice([1.0, 2.0])
    d = rng.uniform(0.0, 1.0, 3)
    return a, b, c, d


def _apply_palette(t: np.ndarray, params: tuple[np.ndarray, ...]) -> np.ndarray:
    a, b, c, d = params
    return np.clip(a + b * np.cos(2 * np.pi * (c * t[..., None] + d)), 0.0, 1.0)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8))


def _random_affine_maps(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` contractive 2×2 maps R(θ)·diag(σ1, ±σ2)·R(φ) and translations in [-1, 1]²."""
    mats = np.empty((count, 2, 2))
    for i in range(count):
        theta, phi = rng.uniform(0, 2 * np.pi, 2)
        s1, s2 = rng.uniform(0.25, 0.9), rng.uniform(0.15, 0.8)
        rot_t = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        rot_p = np.array([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]])
        mats[i] = rot_t @ np.diag([s1, s2 * rng.choice([-1.0, 1.0])]) @ rot_p
    shifts = rng.uniform(-1.0, 1.0, (count, 2))
    return mats, shifts


def _variation(name: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flame variations that keep the orbit bounded (radius-preserving or bounded)."""
    if name == "sinusoidal":
        return np.sin(x), np.sin(y)
    r2 = x * x + y * y
    if name == "swirl":
        s, c = np.sin(r2), np.cos(r2)
        return x * s - y * c, x * c + y * s
    if name == "horseshoe":
        r = np.sqrt(r2) + 1e-9
        return (x - y) * (x + y) / r, 2 * x * y / r
    return x, y  # linear


def _ifs_points(rng: np.random.Generator, n_points: int, n_iter: int) -> tuple[np.ndarray, ...]:
    count = int(rng.integers(2, 6))
    mats, shifts = _random_affine_maps(rng, count)
    dets = np.abs(np.linalg.det(mats)) + 0.02
    cumulative = np.cumsum(dets / dets.sum())
    variation = str(rng.choice(["linear", "linear", "sinusoidal", "swirl", "horseshoe"]))
    var_weight = rng.uniform(0.3, 1.0) if variation != "linear" else 0.0
    map_colour = rng.uniform(0, 1, count)
    x, y = rng.uniform(-1, 1, (2, n_points))
    colour = rng.uniform(0, 1, n_points)
    warmup = 12
    xs, ys, cs = [], [], []
    for step in range(warmup + n_iter):
        k = np.searchsorted(cumulative, rng.random(n_points), side="right").clip(0, count - 1)
        m = mats[k]
        nx = m[:, 0, 0] * x + m[:, 0, 1] * y + shifts[k, 0]
        ny = m[:, 1, 0] * x + m[:, 1, 1] * y + shifts[k, 1]
        if var_weight:
            vx, vy = _variation(variation, nx, ny)
            nx, ny = (1 - var_weight) * nx + var_weight * vx, (1 - var_weight) * ny + var_weight * vy
        x, y = nx, ny
        colour = 0.5 * (colour + map_colour[k])
        if step >= warmup:
            xs.append(x)
            ys.append(y)
            cs.append(colour)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(cs)


def _ifs_render(x: np.ndarray, y: np.ndarray, colour: np.ndarray, size: int,
                rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Log-density tone-mapped histogram of the orbit, framed by robust percentiles; returns (rgb, coverage)."""
    finite = np.isfinite(x) & np.isfinite(y)
    x, y, colour = x[finite], y[finite], colour[finite]
    lo_x, hi_x = np.percentile(x, [0.5, 99.5])
    lo_y, hi_y = np.percentile(y, [0.5, 99.5])
    span = max(hi_x - lo_x, hi_y - lo_y, 1e-9) * 1.08
    cx, cy = (lo_x + hi_x) / 2, (lo_y + hi_y) / 2
    px = np.floor((x - cx) / span * size + size / 2).astype(np.int64)
    py = np.floor((cy - y) / span * size + size / 2).astype(np.int64)
    inside = (px >= 0) & (px < size) & (py >= 0) & (py < size)
    flat = py[inside] * size + px[inside]
    density = np.bincount(flat, minlength=size * size).astype(np.float64)
    col_sum = np.bincount(flat, weights=colour[inside], minlength=size * size)
    hit = density > 0
    mean_col = np.zeros_like(density)
    mean_col[hit] = col_sum[hit] / density[hit]
    log_density = np.log1p(density)
    alpha = np.clip(log_density / np.percentile(log_density[hit], 98), 0.0, 1.0)  # robust to hot spots
    brightness = alpha ** rng.uniform(0.45, 0.7)
    rgb = _apply_palette(mean_col, _palette(rng)) * brightness[:, None]
    return rgb.reshape(size, size, 3), float(hit.mean())


def _ifs(rng: np.random.Generator, size: int) -> np.ndarray:
    n_points = max(2000, size * size // 4)
    best: tuple[np.ndarray, float] | None = None
    for _ in range(8):  # resample degenerate systems (a dot or a thin line) deterministically from the same rng
        x, y, colour = _ifs_points(rng, n_points, 40)
        rgb, coverage = _ifs_render(x, y, colour, size, rng)
        if best is None or coverage > best[1]:
            best = (rgb, coverage)
        if 0.06 <= coverage <= 0.6:
            break
    return _to_uint8(best[0])


def _escape_time(z: np.ndarray, c: np.ndarray | complex, max_iter: int) -> np.ndarray:
    """Smooth escape-time value per point (NaN for points that never escape); vectorised on the active set."""
    c_arr = np.broadcast_to(np.asarray(c, dtype=np.complex128), z.shape).ravel().copy()
    z = z.astype(np.complex128).ravel()
    result = np.full(z.shape, np.nan)
    active = np.arange(z.size)
    for n in range(max_iter):
        z = z * z + c_arr
        escaped = (z.real * z.real + z.imag * z.imag) > 256.0
        if escaped.any():
            mod = np.abs(z[escaped])
            result[active[escaped]] = n + 1 - np.log2(np.log(mod) / np.log(16.0))
            keep = ~escaped
            z, c_arr, active = z[keep], c_arr[keep], active[keep]
            if active.size == 0:
                break
    return result


def _colour_escape(values: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Escape values -> bright filaments on black: fast escapes dark, slow ones coloured, interior black."""
    values = values.reshape(size, size)
    inside = np.isnan(values)
    t = np.zeros((size, size))
    escaped = values[~inside]
    if escaped.size:
        # histogram equalisation: the rank of each escape time, so every zoom level uses the whole palette
        ranks = np.argsort(np.argsort(escaped, kind="stable"), kind="stable")
        t[~inside] = ranks / max(escaped.size - 1, 1)
    brightness = t ** rng.uniform(1.6, 3.0)
    rgb = _apply_palette(t * rng.uniform(1.0, 2.5), _palette(rng)) * brightness[..., None]
    rgb[inside] = 0.0
    return _to_uint8(rgb)


def _julia(rng: np.random.Generator, size: int) -> np.ndarray:
    c = complex(0.7885 * np.exp(1j * rng.uniform(0, 2 * np.pi)))
    c += complex(rng.normal(0, 0.01), rng.normal(0, 0.01))
    zoom = rng.uniform(1.0, 1.7)
    angle = rng.uniform(0, 2 * np.pi)
    grid = (np.arange(size) + 0.5) / size * 2 - 1
    z = (grid[None, :] - 1j * grid[:, None]) * (1.6 / zoom) * np.exp(1j * angle)
    return _colour_escape(_escape_time(z, c, 160), size, rng)


def _mandelbrot(rng: np.random.Generator, size: int) -> np.ndarray:
    # pick a centre on the boundary: a random point that escapes late but does escape
    probes = rng.uniform(-2.0, 0.5, 4000) + 1j * rng.uniform(-1.2, 1.2, 4000)
    values = _escape_time(np.zeros_like(probes), probes, 200)
    candidates = np.flatnonzero(np.isfinite(values) & (values > 25))
    if candidates.size == 0:
        candidates = np.flatnonzero(np.isfinite(values))
    centre = complex(probes[rng.choice(candidates)])
    half = 10 ** rng.uniform(-2.3, -0.4)
    angle = rng.uniform(0, 2 * np.pi)
    grid = (np.arange(size) + 0.5) / size * 2 - 1
    c = centre + (grid[None, :] - 1j * grid[:, None]) * half * np.exp(1j * angle)
    return _colour_escape(_escape_time(np.zeros_like(c), c, 300), size, rng)


# ----------------------------------------------------------------------------------------------------- library
def fit_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A new uint8 (height, width, 3) array: ``image`` (any size; any load_image source) resized with Pillow's
    bicubic filter to cover (height, width) keeping its aspect ratio, then centre-cropped."""
    height, width = check_int("fit height", height, minimum=1), check_int("fit width", width, minimum=1)
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3):
        image = load_image(image)
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image.copy()
    # The cover-then-crop is done as one resize of the source box that the crop would keep, so no intermediate is
    # larger than the output (fitting a 256² fractal to a 1x40000 strip once made a 40000² array).
    scale = max(height / src_h, width / src_w)
    new_w, new_h = max(width, round(src_w * scale)), max(height, round(src_h * scale))
    top, left = (new_h - height) // 2, (new_w - width) // 2
    sx, sy = new_w / src_w, new_h / src_h
    box = (left / sx, top / sy, (left + width) / sx, (top + height) / sy)
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC, box=box)).copy()


def _frozen_rgb(array: np.ndarray) -> np.ndarray:
    """A read-only uint8 (h, w, 3) version of ``array`` (no copy if it already is one)."""
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[-1] == 3 and not array.flags.writeable:
        return np.ascontiguousarray(array)
    image = load_image(array)
    image.setflags(write=False)
    return image


def _fit_cache(max_bytes: int) -> LRUCache:
    """Fitted fractals by (id, height, width), least recently used out first, at most `max_bytes` of pixels."""
    return LRUCache(maxsize=check_int("max_cache_bytes", int(max_bytes), minimum=0), getsizeof=_nbytes)


def _nbytes(array: np.ndarray) -> int:
    return int(array.nbytes)


class FractalLibrary:
    """A set of fractal images with stable ids; decoded lazily, fitted per size with a bounded cache.

    ``sources`` maps id -> file path (decoded on first use) or uint8 (h, w, 3) array. ``origin`` says where the
    set came from (a folder or the generator call) for manifests and logs.
    """

    def __init__(self, sources: Mapping[str, Path | np.ndarray], *, origin: str = "",
                 max_cache_bytes: int = 256 * 2**20) -> None:
        if not sources:
            raise BadArgumentError(f"the fractal library {origin or ''} is empty; add image files or use "
                                   "FractalLibrary.procedural(count).")
        self._sources: dict[str, Path | np.ndarray] = {
            key: (_frozen_rgb(value) if isinstance(value, np.ndarray) else Path(value))
            for key, value in sorted(sources.items())
        }
        self.ids: list[str] = list(self._sources)
        self.origin = origin
        self._lock = threading.RLock()
        self.max_cache_bytes = max_cache_bytes  # the fit cache: least recently used first out, bounded in bytes

    def __getstate__(self) -> dict:
        """Pickled without its lock and fit cache (DataLoader workers, Ray tasks): both are rebuilt empty."""
        state = self.__dict__.copy()
        state.update(_fitted=_fit_cache(self.max_cache_bytes), _lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    @property
    def max_cache_bytes(self) -> int:
        """The bytes of fitted fractals kept (:meth:`fit`); setting it empties the cache."""
        return int(self._fitted.maxsize)

    @max_cache_bytes.setter
    def max_cache_bytes(self, value: int) -> None:
        with self._lock:
            self._fitted = _fit_cache(value)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"FractalLibrary({len(self)} fractals from {self.origin or 'memory'})"

    # constructors ---------------------------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, path: str | Path, *, max_pixels: int = 16_000_000) -> "FractalLibrary":
        """All image files under ``path`` (recursively; ids are relative paths). Unreadable headers are skipped
        with a warning; files whose pixels turn out corrupt raise BadImageError when first used."""
        folder = Path(path)
        if not folder.is_dir():
            raise BadArgumentError(f"fractal folder '{folder}' does not exist; pass a folder of images.")
        sources: dict[str, Path] = {}
        for file in sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p)):
            reason = _header_problem(file, max_pixels)
            if reason is not None:
                log.warning("skipping fractal file %s: %s", file, reason)
                continue
            sources[file.relative_to(folder).as_posix()] = file
        if not sources:
            raise BadArgumentError(f"fractal folder '{folder}' holds no readable images; add PNG/JPEG files or "
                                   "use FractalLibrary.procedural(count).")
        return cls(sources, origin=str(folder))

    @classmethod
    def default(cls) -> "FractalLibrary":
        """The shipped ``fractals/`` folder; falls back to ``procedural(32, seed=0)`` if it is missing."""
        if DEFAULT_FRACTAL_DIR.is_dir() and any(is_image_path(p) for p in DEFAULT_FRACTAL_DIR.iterdir()):
            return cls.from_folder(DEFAULT_FRACTAL_DIR)
        log.warning("shipped fractal folder %s not found; generating 32 fractals in memory", DEFAULT_FRACTAL_DIR)
        return cls.procedural(32, seed=0)

    @classmethod
    def procedural(cls, count: int, seed: int = 0, size: int = 256,
                   kinds: Sequence[str] = _LIBRARY_PATTERN) -> "FractalLibrary":
        """``count`` generated fractals ids ``<kind>_<i:03d>.png``; fractal i uses seed SeedSequence([seed, i])."""
        count = check_int("count", count, minimum=1)
        sources: dict[str, np.ndarray] = {}
        for i in range(count):
            kind = kinds[i % len(kinds)]
            item_seed = int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0])
            image = generate_fractal(item_seed, size, kind)
            image.setflags(write=False)
            sources[f"{kind}_{i:03d}.png"] = image
        return cls(sources, origin=f"procedural(count={count}, seed={seed}, size={size})")

    # access ---------------------------------------------------------------------------------------------------
    def get(self, fractal_id: str) -> np.ndarray:
        """The fractal as stored, uint8 (h, w, 3), read-only (files are decoded on each call; fit() caches)."""
        source = self._sources.get(fractal_id)
        if source is None:
            raise BadArgumentError(f"unknown fractal id {fractal_id!r}; choose one of the library's ids "
                                   f"(e.g. {self.ids[0]!r}).")
        if isinstance(source, np.ndarray):
            return source
        image = load_image(source)
        image.setflags(write=False)
        return image

    def fit(self, fractal_id: str, height: int, width: int) -> np.ndarray:
        """The fractal resized to cover (height, width) and centre-cropped; cached per (id, height, width)."""
        key = (fractal_id, check_int("fit height", height, minimum=1), check_int("fit width", width, minimum=1))
        with self._lock:
            cached = self._fitted.get(key)  # a hit becomes the most recently used
            if cached is not None:
                return cached
            fitted = fit_to(self.get(fractal_id), key[1], key[2])
            fitted.setflags(write=False)
            if fitted.nbytes <= self._fitted.maxsize:  # one larger than the whole budget is not kept
                self._fitted[key] = fitted
            return fitted

    def save(self, folder: str | Path) -> list[Path]:
        """Write every fractal as PNG under ``folder`` (created); returns the written paths."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for fractal_id in self.ids:
            target = out / fractal_id
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(self.get(fractal_id)).save(target, format="PNG", optimize=True)
            written.append(target)
        return written


def _header_problem(path: Path, max_pixels: int) -> str | None:
    """Cheap check (header only): None if the file opens as an image of sane size, else the reason."""
    try:
        if path.stat().st_size == 0:
            return "the file is empty (0 bytes)"
        with Image.open(path) as image:
            width, height = image.size
    except (Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        return f"not a readable image ({exc})"
    if width * height > max_pixels:
        return f"{width}x{height} is over the {max_pixels:,}-pixel limit"
    return None


# ------------------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m diffusemix_core.engine.fractals --out fractals --count 32 --seed 0``: write a procedural set."""
    parser = argparse.ArgumentParser(prog="python -m diffusemix_core.engine.fractals",
                                     description="Generate a set of procedural fractal images (PNG).")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument("--count", type=int, default=32, help="number of fractals (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the set (default 0)")
    parser.add_argument("--size", type=int, default=256, help="side in pixels (default 256)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        library = FractalLibrary.procedural(args.count, seed=args.seed, size=args.size)
    except (BadArgumentError, BadImageError) as exc:
        parser.exit(2, f"error: {exc}\n")
    paths = library.save(args.out)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} fractals ({total / 2**20:.2f} MiB) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
