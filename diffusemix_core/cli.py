"""Command line: ``python -m diffusemix_core <command>``.

``preview`` writes the six stages of one augmentation; ``augment``, ``status``, ``review`` and ``export`` work on a
workspace (see ``cli_workspace.py``). Errors of the project's types are printed in one line (``--verbose`` for the
traceback) and give a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from .errors import DiffuseMixError

log = logging.getLogger("diffusemix_core")

EXIT_ERROR = 1
EXIT_USAGE = 2


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The generation flags shared by every command that runs the model."""
    from .generation import DEFAULT_MODEL, GenerationSettings

    d = GenerationSettings()
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"diffusers InstructPix2Pix model id or local folder (default {DEFAULT_MODEL}); "
                        "'tiny-random' is an untrained miniature for tests and offline demos")
    g.add_argument("--steps", type=int, default=d.steps,
                   help=f"denoising steps (default {d.steps}; the authors' code uses 100)")
    g.add_argument("--guidance-scale", type=float, default=d.guidance_scale,
                   help=f"text guidance scale (default {d.guidance_scale})")
    g.add_argument("--image-guidance-scale", type=float, default=d.image_guidance_scale,
                   help=f"image guidance scale (default {d.image_guidance_scale})")
    g.add_argument("--resolution", type=int, default=d.resolution,
                   help=f"working resolution of the long side, a multiple of 8 (default {d.resolution}); "
                        "the aspect ratio is kept and Î is resized back to the source's size")
    g.add_argument("--device", default=d.device, help="cpu, cuda, cuda:1, ... (default auto: cuda when available)")
    g.add_argument("--dtype", default=d.dtype, choices=["auto", "float32", "float16", "bfloat16"],
                   help="model precision (default auto: float16 on GPU, float32 on CPU)")
    g.add_argument("--revision", default=None, help="model revision (branch, tag or commit) for hub ids")


def settings_from_args(args: argparse.Namespace):
    from .generation import GenerationSettings

    return GenerationSettings(
        model=args.model, steps=args.steps, guidance_scale=args.guidance_scale,
        image_guidance_scale=args.image_guidance_scale, resolution=args.resolution,
        device=args.device, dtype=args.dtype, revision=args.revision,
    )


def add_library_arguments(parser: argparse.ArgumentParser) -> None:
    """Prompt and fractal library flags."""
    g = parser.add_argument_group("libraries")
    g.add_argument("--prompts", default=None,
                   help='comma-separated prompts that replace the library, e.g. "autumn,snowy"')
    g.add_argument("--prompt-file", type=Path, default=None,
                   help="a prompt library file (.json or .toml, the format of prompts/default.json)")
    g.add_argument("--fractal-dir", type=Path, default=None,
                   help="a folder of fractal images (default: the shipped procedural set in fractals/)")


def prompt_library_from_args(args: argparse.Namespace, fallback=None):
    """The library the flags ask for, else `fallback`, else the paper's default."""
    from .prompts import PromptLibrary

    if args.prompts and args.prompt_file:
        raise_usage("give --prompts or --prompt-file, not both")
    if args.prompt_file:
        return PromptLibrary.load(args.prompt_file)
    if args.prompts:
        library = PromptLibrary.from_texts([p.strip() for p in args.prompts.split(",")])
        library.validate()
        return library
    return fallback if fallback is not None else PromptLibrary.default()


def fractal_library_from_args(args: argparse.Namespace):
    from .fractals import FractalLibrary

    return FractalLibrary.from_folder(args.fractal_dir) if args.fractal_dir else FractalLibrary.default()


def raise_usage(message: str) -> None:
    from .errors import BadArgumentError

    raise BadArgumentError(message)


# preview -------------------------------------------------------------------------------------------------
def add_preview(subparsers) -> None:
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
    from .engine import DiffuseMix
    from .images import save_png

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
        from .random_models import UNTRAINED_NOTE

        print(f"note: {record.model} is an {UNTRAINED_NOTE}.")
    return 0


# main ----------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from . import cli_workspace

    parser = argparse.ArgumentParser(
        prog="python -m diffusemix_core",
        description="DiffuseMix Studio: label-preserving diffusion augmentation (DiffuseMix, CVPR 2024).",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="log details and show tracebacks")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_preview(subparsers)
    cli_workspace.add_subcommands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except DiffuseMixError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume.", file=sys.stderr)
        return 130
