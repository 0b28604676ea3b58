"""The Explore tab's "Compare presets": one image's Î under two presets, side by side, with what each cost.

The image, prompt and seed are the Explore tab's own ("random" draws the prompt as Generate does for that seed, so
Î under the app's settings is the Î that Generate shows). Each preset is the app's settings under that preset
(model, resolution and device as started; the app's ``--steps`` only for the app's own preset, so that preset IS
the app's Generate: ``ModelHolder.settings``), the two generators are loaded
before the timing, and the row of each setting says its UNet evaluations per augmentation, the seconds its
generation took, its drift from I and the SSIM of the two Î (``curation/compare.py`` does the comparing).
"""

from __future__ import annotations

from typing import Any, Callable

from ..curation.compare import Side, compare_image, warm_up
from ..engine.diffusemix import Mixer
from ..engine.generation import working_size
from ..engine.images import image_key
from ..engine.presets import PRESETS
from ..engine.test_models import UNTRAINED_NOTE
from .explore import Explore, chosen
from .model import gpu_task

__all__ = ["COMPARE_COLUMNS", "ComparePresets", "preset_choices"]

COMPARE_COLUMNS = ["setting", "preset", "UNet evaluations", "seconds", "drift from I", "SSIM Î_A vs Î_B"]
Progress = Callable[..., Any]


def _no_progress(*_args, **_kwargs) -> None:
    return None


def preset_choices() -> list[str]:
    """The presets the tab offers: those that need no adapter file (``lcm`` needs a LoRA the app is not given)."""
    return [name for name, preset in PRESETS.items() if not preset.needs_lora]


@gpu_task
def generate_both(image, prompt: str, seed: int, a: Side, b: Side, library, warm: bool = False):
    """The GPU-bound step of Compare (decorated with spaces.GPU on ZeroGPU); with `warm`, an untimed 1-step
    generation first, so that the first comparison's seconds hold no one-time costs."""
    if warm:
        warm_up([a, b], image, library.render(prompt))
    return compare_image(image, [prompt], seed, a, b, library=library)


class ComparePresets:
    """Compare two presets on the Explore tab's image (state: the working sizes warmed up; the model holder keeps
    the generators, one per settings)."""

    def __init__(self, explore: Explore) -> None:
        self.explore = explore
        self._warmed: set = set()  # the working sizes a warm-up ran at

    def compare(self, image, prompt, seed, preset_a: str, preset_b: str, *,
                progress: Progress = _no_progress) -> tuple[str, str, list[list], str]:
        """(Î under A, Î under B) as display files, the table (one row per setting: COMPARE_COLUMNS) and a line
        saying what B costs next to A."""
        explore = self.explore
        original = explore.load(image)
        seed = 0 if seed is None else int(seed)
        library = explore.workspace.manifest.get_prompt_library()
        prompt = chosen(prompt) or Mixer(prompts=library, fractals=explore.fractals).seeded_choice(seed).prompt
        progress(0.05, desc="Loading the model for both presets (first use only)…")
        a = Side(preset_a, explore.model.generator(explore.model.settings(preset_a)))
        b = Side(preset_b, explore.model.generator(explore.model.settings(preset_b)))
        progress(0.2, desc=f"Generating Î under {preset_a} and {preset_b}…")
        size = working_size(*original.shape[:2], a.settings.resolution)
        one = generate_both(original, prompt, seed, a, b, library, warm=size not in self._warmed)
        self._warmed.add(size)
        row, key = one.rows[0], image_key(original)
        files = explore.files.paths([
            (f"compare/{key}/{side.settings.cache_key()}/{prompt}/{seed}", image)
            for side, image in ((a, one.images_a[0]), (b, one.images_b[0]))])
        table = [["A", preset_a, row.evals_a, round(row.seconds_a, 3), round(row.drift_a, 3), round(row.ssim, 3)],
                 ["B", preset_b, row.evals_b, round(row.seconds_b, 3), round(row.drift_b, 3), round(row.ssim, 3)]]
        text = (f"**{prompt}** · seed {seed}: B ({preset_b}) runs **{row.evals_b / row.evals_a:.2f}×** the UNet "
                f"evaluations of A ({preset_a}) and took {row.seconds_b / row.seconds_a:.2f}× its time; "
                f"SSIM of the two Î **{row.ssim:.3f}** (1 = the same image).")
        if a.generator.is_test_model:
            text += f" ⚠️ {UNTRAINED_NOTE[0].upper()}{UNTRAINED_NOTE[1:]}."
        return files[0], files[1], table, text
