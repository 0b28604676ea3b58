"""The ``preview`` command of ``python -m diffusemix_core``: augment one image and write its six stages.

The handler takes the argparse namespace and returns an exit status; errors of the project's types propagate to
``cli.main``, which prints them in one line (the traceback with ``--verbose``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .args import (add_library_arguments, add_model_arguments, fractal_library_from_args, prompt_library_from_args,
                   settings_from_args)

__all__ = ["add_subcommand", "run_preview"]


def add_subcommand(subparsers) -> None:
    """Register ``preview`` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "preview",
        help="augment one image and write its six stages as PNG files plus choices.json",
        description="Augment IMAGE once and write original.png, generated.png, mask.png, hybrid.png, "
                    "fractal.png, final.png and choices.json into --out.",
    )
    p.add_argument("image", type=Path, help="the source image I")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--prompt", default=None, help="prompt, e.g. 'autumn' (default: drawn from the library)")
    p.add_argument("--mask", default=None, help="mask kind: left, right, top, bottom or box (default: drawn)")
    p.add_argument("--fractal", default=None, help="fractal id in the library, e.g. a file name (default: drawn)")
    p.add_argument("--lam", type=float, default=0.2, help="fractal blend factor λ in [0, 1] (default 0.2)")
    p.add_argument("--feather", type=int, default=0,
                   help="pixels of linear ramp across the mask's seam (default 0; the authors' code uses 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice and of the generation")
    add_library_arguments(p)
    add_model_arguments(p)
    p.set_defaults(func=run_preview)


def run_preview(args: argparse.Namespace) -> int:
    from ..engine.diffusemix import DiffuseMix
    from ..engine.images import save_png

    dm = DiffuseMix(
        prompts=prompt_library_from_args(args),
        fractals=fractal_library_from_args(args),
        lam=args.lam,
        feather=args.feather,
        settings=settings_from_args(args),
    )
    record = dm.augment(args.image, prompt=args.prompt, mask=args.mask, fractal=args.fractal, seed=args.seed,
                        source=str(args.image))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, array in record.stages().items():
        save_png(array, args.out / f"{name}.png")
    (args.out / "choices.json").write_text(json.dumps(record.choices(), indent=2, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    print(f"wrote 6 stages and choices.json to {args.out}: prompt={record.prompt!r} mask={record.mask_kind} "
          f"fractal={record.fractal_id} lam={record.lam} seed={record.requested_seed}")
    if record.is_test_model:
        from ..engine.test_models import UNTRAINED_NOTE

        print(f"note: {record.model} is an {UNTRAINED_NOTE}.")
    return 0
