"""Compare two generation settings on the same sources, prompts and seeds: is the cheaper one good enough here?

For every (source I, prompt) pair, Î is generated under settings A and under settings B with the same seed, and one
:class:`PairRow` records:

* ``score_a`` / ``score_b``: the label consistency of each Î (``label_scorer.py``: CLIP's probability of the
  source's class among the classes of the sources compared; the class is the source's folder name, as everywhere in
  the product). With sources of one class only it is 1 by construction: compare sources of several classes;
* ``ssim``: the structural similarity of Î_A and Î_B (scikit-image, colour, on the source's size; 1 = the same
  image). LPIPS would be the perceptual distance of choice, but its package needs torchvision, which this project
  does not install;
* ``drift_a`` / ``drift_b``: how far each Î strayed from the structure of I (``engine/drift.py``);
* ``evals_a`` / ``evals_b``: UNet evaluations per augmentation (:meth:`GenerationSettings.unet_evaluations`);
* ``seconds_a`` / ``seconds_b``: measured wall seconds per augmentation (generation only, the models are loaded
  before, and one untimed 1-step generation runs first (:func:`warm_up`); which setting runs first alternates from
  source to source).

:func:`compare_image` compares one image (the app's Explore tab uses it for one prompt); :func:`run_comparison`
compares a list of sources (:func:`find_sources`) and writes a grid PNG per source (``compare_grid.py``),
``compare.csv`` (:data:`CSV_COLUMNS`) and ``compare.md`` (:meth:`Comparison.markdown`).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engine.drift import drift_score
from ..engine.generation import GenerationRequest, GenerationSettings
from ..engine.images import IGNORED_DIRS, image_key, is_image_path, load_image, save_png
from ..engine.pix2pix import Pix2PixGenerator
from ..engine.prompts import PromptLibrary
from ..engine.test_models import UNTRAINED_NOTE, UNTRAINED_SCORER_NOTE
from ..errors import BadArgumentError, BadImageError
from ..workspace.labels import read_label
from .class_names import class_names as names_of_classes
from .compare_grid import GridRow, draw_grid
from .label_scorer import LabelScorer

__all__ = ["CSV_COLUMNS", "Comparison", "ImageComparison", "PairRow", "Side", "compare_image", "find_sources",
           "image_ssim", "run_comparison"]

log = logging.getLogger(__name__)

CSV_COLUMNS = ("source", "label", "prompt", "seed", "setting_a", "setting_b", "score_a", "score_b", "ssim",
               "drift_a", "drift_b", "evals_a", "evals_b", "seconds_a", "seconds_b", "grid")
SSIM_WINDOW = 7  # scikit-image's default window; smaller images get the largest odd window that fits


# --------------------------------------------------------------------------------------------------- the maths
def image_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two uint8 (h, w, 3) images of one size, in [-1, 1] (1: identical)."""
    from skimage.metrics import structural_similarity

    if a.shape != b.shape:
        raise BadArgumentError(f"SSIM needs two images of one size, got {a.shape} and {b.shape}.")
    side = min(a.shape[:2])
    window = min(SSIM_WINDOW, side if side % 2 else side - 1)
    if window < 3:
        return 1.0 if np.array_equal(a, b) else float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return float(structural_similarity(a, b, win_size=window, channel_axis=-1, data_range=255))


# --------------------------------------------------------------------------------------------------- one image
@dataclass(frozen=True)
class Side:
    """One of the two settings compared: its name (a preset's, or "A"/"B") and its loaded generator."""

    name: str
    generator: Pix2PixGenerator

    @property
    def settings(self) -> GenerationSettings:
        return self.generator.settings

    def describe(self) -> str:
        s = self.settings
        text = (f"{s.scheduler}, {s.steps} steps, guidance {s.guidance_scale:g}/{s.image_guidance_scale:g}, "
                f"{s.resolution} px")
        if s.cache_interval > 1:
            text += f", cache every {s.cache_interval}"
        return text + (f", LoRA {s.lora}" if s.lora else "")


@dataclass
class PairRow:
    """One (source, prompt) pair under both settings (see the module's docstring for each column)."""

    source: str
    label: str | None
    prompt: str
    seed: int
    setting_a: str
    setting_b: str
    evals_a: int
    evals_b: int
    seconds_a: float
    seconds_b: float
    ssim: float
    drift_a: float
    drift_b: float
    score_a: float | None = None
    score_b: float | None = None
    grid: str = ""


@dataclass
class ImageComparison:
    """One image under both settings: I, and per prompt its row, Î_A and Î_B."""

    original: np.ndarray
    rows: list[PairRow]
    images_a: list[np.ndarray]
    images_b: list[np.ndarray]
    seconds_a: float  # generation wall time of all the prompts
    seconds_b: float


def _timed(side: Side, requests: list[GenerationRequest], batch_size: int) -> tuple[list[np.ndarray], float]:
    side.generator.load()  # never inside the timing
    start = time.perf_counter()
    results = side.generator.generate(requests, batch_size=batch_size)
    return [r.image for r in results], time.perf_counter() - start


def warm_up(sides: Sequence[Side], image: np.ndarray, prompt_text: str) -> None:
    """One untimed 1-step generation per distinct model of `sides` at `image`'s working size: the first run's
    one-time costs (kernel choice, memory pools) would otherwise land in the seconds of whichever side runs first.
    The pipelines are shared (``load_pipeline``), so this loads nothing twice; an adapter is left out of it."""
    done = set()
    for side in sides:
        settings = dataclasses.replace(side.settings, steps=1, lora=None, compile=False, cache_interval=1)
        if settings not in done:
            done.add(settings)
            Pix2PixGenerator(settings).generate([GenerationRequest(image, "warm-up", prompt_text, 0)])


def compare_image(image: np.ndarray, prompts: Sequence[str], seed: int, a: Side, b: Side, *,
                  library: PromptLibrary, source: str = "", label: str | None = None, b_first: bool = False,
                  batch_size: int = 4) -> ImageComparison:
    """Î of `image` for every prompt (raw, rendered with `library`'s template) under A and under B, all with
    `seed`, and the row of each pair (without label scores: :func:`score_pairs` adds them)."""
    if not prompts:
        raise BadArgumentError("No prompt to compare with: pass at least one (--prompts autumn,snowy).")
    key = image_key(image)
    requests = [GenerationRequest(image=image, image_key=key, prompt_text=library.render(p), seed=int(seed))
                for p in prompts]
    if b_first:
        images_b, seconds_b = _timed(b, requests, batch_size)
        images_a, seconds_a = _timed(a, requests, batch_size)
    else:
        images_a, seconds_a = _timed(a, requests, batch_size)
        images_b, seconds_b = _timed(b, requests, batch_size)
    n = len(prompts)
    rows = [PairRow(source=source, label=label, prompt=p, seed=int(seed), setting_a=a.name, setting_b=b.name,
                    evals_a=a.settings.unet_evaluations(), evals_b=b.settings.unet_evaluations(),
                    seconds_a=seconds_a / n, seconds_b=seconds_b / n, ssim=image_ssim(ia, ib),
                    drift_a=drift_score(image, ia), drift_b=drift_score(image, ib))
            for p, ia, ib in zip(prompts, images_a, images_b)]
    return ImageComparison(image, rows, images_a, images_b, seconds_a, seconds_b)


def score_pairs(scorer: LabelScorer, comparison: ImageComparison, true_name: str, class_names: Sequence[str]) -> None:
    """Fill in each row's label consistency of Î_A and Î_B (CLIP's probability of `true_name`)."""
    n = len(comparison.rows)
    scores = scorer.score([*comparison.images_a, *comparison.images_b], [true_name] * (2 * n), class_names)
    for row, score_a, score_b in zip(comparison.rows, scores[:n], scores[n:]):
        row.score_a, row.score_b = score_a.prob, score_b.prob


# --------------------------------------------------------------------------------------------------- sources
def find_sources(paths: Sequence[str | Path], limit: int | None = None) -> list[tuple[Path, str | None]]:
    """(image file, class label) for every image named or found under the folders named (sorted, hidden files and
    ``__MACOSX`` left out), at most `limit`; the label is the name of the folder that holds the file."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if not path.exists():
            raise BadArgumentError(f"Source '{path}' does not exist; pass image files, or folders of them "
                                   "(DIR/<class>/<image>).")
        if path.is_dir():
            files = []
            for folder, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in IGNORED_DIRS)
                files += [Path(folder) / n for n in names if not n.startswith(".") and is_image_path(n)]
            if not files:
                raise BadArgumentError(f"Source folder '{path}' holds no image file; pass a folder of images "
                                       "(DIR/<class>/<image>).")
            found += sorted(files)
        else:
            found.append(path)
    unique = list(dict.fromkeys(found))[:limit]
    return [(p, read_label(p.resolve().parent.name) or None) for p in unique]


# --------------------------------------------------------------------------------------------------- a run
@dataclass
class Comparison:
    """What :func:`run_comparison` did: the rows, the seconds, the files written and the sources skipped."""

    a: Side
    b: Side
    rows: list[PairRow] = field(default_factory=list)
    seconds_a: float = 0.0  # generation wall time, all pairs
    seconds_b: float = 0.0
    grids: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    scorer: LabelScorer | None = None
    classes: int = 0

    def seconds_per_augmentation(self) -> tuple[float, float]:
        n = max(1, len(self.rows))
        return self.seconds_a / n, self.seconds_b / n

    def write_csv(self, path: Path) -> None:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, CSV_COLUMNS)
            writer.writeheader()
            for row in self.rows:
                values = dataclasses.asdict(row)
                writer.writerow({k: _cell(values[k]) for k in CSV_COLUMNS})

    def markdown(self) -> str:
        """The short summary: means of each column, and B's cost as a share of A's."""
        a, b = self.a, self.b
        sec_a, sec_b = self.seconds_per_augmentation()
        evals_a, evals_b = a.settings.unet_evaluations(), b.settings.unet_evaluations()

        def mean(column: str) -> str:
            values = [getattr(r, column) for r in self.rows if getattr(r, column) is not None]
            return f"{np.mean(values):.3f}" if values else "–"

        lines = [f"# compare-settings: A = {a.name}, B = {b.name}", "",
                 f"{len({r.source for r in self.rows})} sources × {len({r.prompt for r in self.rows})} prompts = "
                 f"{len(self.rows)} pairs, each generated under A and B with the same seed.", "",
                 "| | A: " + a.name + " | B: " + b.name + " | B / A |", "|---|---|---|---|",
                 f"| settings | {a.describe()} | {b.describe()} | |",
                 f"| UNet evaluations per augmentation | {evals_a} | {evals_b} | {evals_b / evals_a:.2f} |",
                 f"| seconds per augmentation (measured) | {sec_a:.3f} | {sec_b:.3f} | "
                 f"{sec_b / sec_a if sec_a else float('nan'):.2f} |",
                 f"| mean label consistency (CLIP, 1 = sure of the class) | {mean('score_a')} | {mean('score_b')} | |",
                 f"| mean drift from I (0 = same structure) | {mean('drift_a')} | {mean('drift_b')} | |", "",
                 f"Mean SSIM of Î_A vs Î_B: **{mean('ssim')}** (1 = the same image; LPIPS is not used: it needs "
                 "torchvision).", ""]
        if self.scorer is None:
            lines.append("No label scores (--scorer none).")
        elif self.classes < 2:
            lines.append("Only one class among the sources: its label score is 1 by construction; compare sources "
                         "of several class folders.")
        notes = [f"{a.name}/{b.name} ran on an {UNTRAINED_NOTE}" if a.generator.is_test_model else "",
                 f"the scorer is an {UNTRAINED_SCORER_NOTE}" if self.scorer and self.scorer.is_test_model else ""]
        lines += [f"Note: {n}." for n in notes if n]
        lines += ["", f"Skipped {len(self.skipped)} sources:"] + [f"- {src}: {why}" for src, why in self.skipped] if self.skipped else []
        return "\n".join(lines).rstrip() + "\n"


def _cell(value):
    return "" if value is None else round(value, 6) if isinstance(value, float) else value


def run_comparison(sources: Sequence[tuple[Path, str | None]], a: Side, b: Side, out: Path, *,
                   prompts: PromptLibrary, seed: int = 0, scorer: LabelScorer | None = None,
                   class_map=None, progress: Callable[[int, int, str], None] | None = None) -> Comparison:
    """Compare A and B on every source with every enabled prompt of `prompts`; write ``out/grid-NNN.png`` per
    source, ``out/compare.csv`` and ``out/compare.md``. A source that cannot be read is skipped and reported
    (``Comparison.skipped``); when none can be read, BadImageError names the first."""
    texts = prompts.enabled()
    labels = [label for _, label in sources if label]
    names = names_of_classes(labels, class_map) if labels else {}
    class_list = list(dict.fromkeys(names.values()))
    result = Comparison(a, b, scorer=scorer, classes=len(class_list))
    out.mkdir(parents=True, exist_ok=True)
    first_error: BadImageError | None = None
    for i, (path, label) in enumerate(sources):
        if progress is not None:
            progress(i, len(sources), str(path))
        try:
            image = load_image(path)
        except BadImageError as exc:
            first_error = first_error or exc
            result.skipped.append((str(path), str(exc)))
            log.info("skipped %s: %s", path, exc)
            continue
        if not result.rows:
            warm_up([a, b], image, prompts.render(texts[0]))
        one = compare_image(image, texts, seed, a, b, library=prompts, source=str(path), label=label,
                            b_first=bool(i % 2))
        if scorer is not None and label:
            score_pairs(scorer, one, names[label], class_list)
        grid = out / f"grid-{len(result.grids) + 1:03d}.png"
        captions = [f"{r.prompt} · seed {r.seed} · SSIM {r.ssim:.3f} · drift A {r.drift_a:.3f}, B {r.drift_b:.3f}"
                    for r in one.rows]
        save_png(draw_grid(image, [GridRow(c, ia, ib) for c, ia, ib in zip(captions, one.images_a, one.images_b)],
                           (f"I · {label or path.name}", f"Î A · {a.name}", f"Î B · {b.name}")), grid)
        for row in one.rows:
            row.grid = grid.name
        result.grids.append(grid)
        result.rows += one.rows
        result.seconds_a += one.seconds_a
        result.seconds_b += one.seconds_b
    if not result.rows:
        raise first_error or BadArgumentError("No source to compare.")
    result.write_csv(out / "compare.csv")
    (out / "compare.md").write_text(result.markdown(), encoding="utf-8")
    return result
