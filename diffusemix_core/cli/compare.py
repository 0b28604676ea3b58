"""The ``compare-settings`` command: two generation settings on the same sources, prompts and seeds.

``python -m diffusemix_core compare-settings SOURCES --a reference --b fast --out DIR`` writes a grid PNG per source
(I | Î under A | Î under B, one row per prompt), ``compare.csv`` (one row per source and prompt) and ``compare.md``
(means, and B's UNet evaluations and seconds as a share of A's). The work is ``curation/compare.py``.

``--a`` and ``--b`` name presets (``engine/presets.py``); the model flags (``--model``, ``--resolution``,
``--device``, ``--steps``, ...) apply to both, and a flag given beside the presets wins over both of them, as
beside ``--preset`` elsewhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .args import add_model_arguments, add_scorer_arguments, prompt_library_from_args, settings_from_args, whole_number

__all__ = ["add_subcommand", "run_compare"]

DEFAULT_PROMPTS = 3  # prompts of the default library compared when --prompts is not given


def add_subcommand(subparsers) -> None:
    """Register ``compare-settings`` on the main parser's subparsers."""
    from ..engine.presets import PRESETS  # no torch

    p = subparsers.add_parser(
        "compare-settings",
        help="generate the same sources, prompts and seeds under two presets and compare them side by side",
        description="Generate every source with every prompt under settings A and B (the same seeds) and write a "
                    "grid PNG per source (I | Î A | Î B), compare.csv (label consistency of each Î, SSIM between "
                    "them, drift of each, UNet evaluations and seconds per augmentation) and compare.md into --out.",
    )
    p.add_argument("sources", nargs="+", type=Path, metavar="SOURCE",
                   help="image files, or folders of them (DIR/<class>/<image>: the folder's name is the class)")
    p.add_argument("--a", default="reference", choices=list(PRESETS), help="the preset of A (default reference)")
    p.add_argument("--b", default="fast", choices=list(PRESETS), help="the preset of B (default fast)")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--prompts", default=None,
                   help=f'comma-separated prompts, e.g. "autumn,snowy" (default: the first {DEFAULT_PROMPTS} of '
                        "the shipped library)")
    p.add_argument("--prompt-file", type=Path, default=None,
                   help="a prompt library file (.json or .toml): its enabled prompts are compared")
    p.add_argument("--seed", type=int, default=0, help="the seed of every generation (default 0)")
    p.add_argument("--limit", type=whole_number(1), default=None, help="compare at most N sources (sorted)")
    add_scorer_arguments(p)
    add_model_arguments(p, preset=False)
    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    from ..curation.compare import Side, find_sources, run_comparison
    from ..curation.label_scorer import LabelScorer
    from ..curation.scores import resolve_scorer
    from ..engine.pix2pix import Pix2PixGenerator
    from ..engine.prompts import PromptLibrary
    from ..errors import BadArgumentError

    if args.seed < 0:
        raise BadArgumentError(f"Bad seed {args.seed}: pass a whole number >= 0.")
    sources = find_sources(args.sources, args.limit)
    shipped = PromptLibrary.default()
    library = prompt_library_from_args(
        args, fallback=PromptLibrary.from_texts(shipped.enabled()[:DEFAULT_PROMPTS], template=shipped.template))
    a = Side(args.a, Pix2PixGenerator(settings_from_args(args, args.a)))
    b = Side(args.b, Pix2PixGenerator(settings_from_args(args, args.b)))
    scorer_model = resolve_scorer(args.scorer, generator_model=args.model)
    scorer = LabelScorer(scorer_model, device=args.device, dtype=args.dtype) if scorer_model else None

    def progress(done: int, total: int, source: str) -> None:
        print(f"[{done + 1}/{total}] {source}", flush=True)

    result = run_comparison(sources, a, b, args.out, prompts=library, seed=args.seed, scorer=scorer,
                            class_map=args.class_map, progress=progress)
    for source, reason in result.skipped:
        print(f"warning: skipped {source}: {reason}", file=sys.stderr)
    sec_a, sec_b = result.seconds_per_augmentation()
    evals_a, evals_b = a.settings.unet_evaluations(), b.settings.unet_evaluations()
    print(f"wrote {len(result.grids)} grids, compare.csv ({len(result.rows)} pairs) and compare.md to {args.out}")
    print(f"A {args.a}: {evals_a} UNet evaluations, {sec_a:.3f} s per augmentation; B {args.b}: {evals_b}, "
          f"{sec_b:.3f} s (B/A: {evals_b / evals_a:.2f} of the evaluations, "
          f"{sec_b / sec_a if sec_a else float('nan'):.2f} of the time)")
    if a.generator.is_test_model:
        from ..engine.test_models import UNTRAINED_NOTE

        print(f"note: {args.model} is an {UNTRAINED_NOTE}.")
    return 0
