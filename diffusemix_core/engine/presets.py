"""Named bundles of generation settings: what an augmentation costs and what it risks, chosen by a plain name.

=========  ===================  =====  ======================  ============  ================================
preset     scheduler            steps  guidance (text, image)  UNet evals    what changes
=========  ===================  =====  ======================  ============  ================================
reference  Euler-ancestral      20     4.0, 1.5                60 (1)        nothing: today's output
fast       DPM-Solver++ (2M)    10     4.0, 1.5                30 (1/2)      a deterministic solver: other Î
fastest    DPM-Solver++ (2M)    5      4.0, 1.0                10 (1/6)      fewer steps, weaker image hold
lcm        LCM                  4      1.0, 1.0                4 (1/15)      needs an LCM LoRA (``--lora``)
=========  ===================  =====  ======================  ============  ================================

A flag given beside a preset wins over it (``--preset fast --steps 12``). Feature caching (``--cache-interval``)
is a separate setting that applies to any preset. ``reference`` is the default and is exactly the output of the
settings' defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import BadArgumentError
from .generation import GenerationSettings

__all__ = ["PRESETS", "Preset", "apply_preset", "faster_preset", "preset_table"]


@dataclass(frozen=True)
class Preset:
    name: str
    changes: dict[str, Any]
    summary: str  # one line: what it changes and what it risks
    needs_lora: bool = False


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("reference", {}, "Euler-ancestral, 20 steps, 3 guidance branches: today's output (the default)"),
        Preset("fast", {"scheduler": "dpm++", "steps": 10},
               "DPM-Solver++ 10 steps: half the UNet evaluations; a deterministic solver, so Î differs in detail"),
        Preset("fastest", {"scheduler": "dpm++", "steps": 5, "image_guidance_scale": 1.0},
               "DPM-Solver++ 5 steps, image guidance 1.0 (2 branches): 1/6 of the evaluations; softer edits that "
               "hold the source less firmly"),
        Preset("lcm", {"scheduler": "lcm", "steps": 4, "guidance_scale": 1.0, "image_guidance_scale": 1.0},
               "LCM 4 steps, 1 branch: 1/15 of the evaluations; needs a latent-consistency LoRA (--lora)",
               needs_lora=True),
    )
}


def apply_preset(name: str, base: GenerationSettings | None = None, **given: Any) -> GenerationSettings:
    """`base` (default: the defaults) with the preset's settings, then the explicitly `given` ones (None: not
    given) on top."""
    if name not in PRESETS:
        raise BadArgumentError(f"Bad preset {name!r}: pass one of {', '.join(PRESETS)} (default reference).")
    preset = PRESETS[name]
    changes = {**preset.changes, **{k: v for k, v in given.items() if v is not None}}
    settings = dataclasses.replace(base or GenerationSettings(), **changes)
    if preset.needs_lora and settings.lora is None:
        raise BadArgumentError(f"Preset {name!r} needs a latent-consistency LoRA: pass --lora FOLDER_OR_HUB_ID.")
    return settings


def faster_preset(name: str) -> str | None:
    """The preset one step faster than `name` that needs no extra adapter (None when there is none)."""
    order = [p for p in PRESETS if not PRESETS[p].needs_lora]
    if name not in order or order.index(name) == len(order) - 1:
        return None
    return order[order.index(name) + 1]


def preset_table(base: GenerationSettings | None = None) -> list[dict[str, Any]]:
    """One row per preset: name, scheduler, steps, guidance, UNet evaluations and their ratio to reference."""
    base = base or GenerationSettings()
    reference = apply_preset("reference", base).unet_evaluations()
    rows = []
    for name, preset in PRESETS.items():
        settings = dataclasses.replace(base, **preset.changes)
        rows.append({"preset": name, "scheduler": settings.scheduler, "steps": settings.steps,
                     "guidance_scale": settings.guidance_scale, "image_guidance_scale": settings.image_guidance_scale,
                     "unet_evaluations": settings.unet_evaluations(),
                     "vs_reference": settings.unet_evaluations() / reference, "summary": preset.summary})
    return rows
