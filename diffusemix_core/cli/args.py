"""Argument helpers shared by the command modules: value types (whole numbers, row ids), the flag groups several
commands take (workspace, model, libraries, scorer) and the objects built from those flags.

Building a parser imports nothing heavy (no torch, no SQLite store): what a flag's value needs is imported when the
command runs, so ``python -m diffusemix_core --help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["MAX_IDS", "MAX_ROW_ID", "add_library_arguments", "add_model_arguments", "add_scorer_arguments",
           "add_workspace_argument", "check_row_id", "fractal_library_from_args", "id_list", "joined_ids",
           "prompt_library_from_args", "row_id", "scorer_ref", "settings_from_args", "whole_number"]

MAX_ROW_ID = 2**63 - 1  # SQLite stores integers in 64 bits: a larger id can name no row
MAX_IDS = 32766  # SQLite's default limit on the values one statement takes: more ids cannot be looked up at once


def whole_number(minimum: int = 1):
    """An argparse type: a whole number >= `minimum`, or a usage error that says so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def row_id(text: str) -> int:
    """An argparse type: the id of a row (an augmentation, a scorer), a whole number SQLite can hold."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an id (a whole number), got {text!r}") from None
    check_row_id(value)
    return value


def check_row_id(value: int) -> int:
    """`value` if it can be a row id, else a usage error naming it (SQLite's integers end at 2**63 - 1)."""
    if not 0 <= value <= MAX_ROW_ID:
        raise argparse.ArgumentTypeError(f"no row can have the id {value}: ids are whole numbers from 0 to "
                                         f"{MAX_ROW_ID}; list them with `status` or `report`")
    return value


def id_list(text: str) -> list[int]:
    """An argparse type: '3', '3,4,9' or '3-7' (inclusive) -> row ids. An id SQLite cannot hold, or a range of more
    than MAX_IDS ids, is a usage error naming it (a range is checked before it is counted out)."""
    out: list[int] = []
    try:
        for part in text.replace(" ", ",").split(","):
            if not part:
                continue
            if "-" in part.strip("-"):
                low, high = (check_row_id(int(end)) for end in part.split("-", 1))
                if high - low + 1 > MAX_IDS:
                    raise argparse.ArgumentTypeError(
                        f"the range {part} holds {high - low + 1} ids, more than the {MAX_IDS} one command can name; "
                        "narrow it, or select by --label, --prompt or --max-drift instead")
                out.extend(range(low, high + 1))
            else:
                out.append(check_row_id(int(part)))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ids like 3, 3,4,9 or 3-7, got {text!r}") from None
    return out


def joined_ids(groups: list[list[int]] | None) -> list[int] | None:
    """The ids of every ``--ids`` group (``nargs="+"`` of :func:`id_list`), at most MAX_IDS of them; None for none."""
    if groups is None:
        return None
    ids = [i for group in groups for i in group]
    if len(ids) > MAX_IDS:
        from ..errors import BadArgumentError

        raise BadArgumentError(f"--ids names {len(ids)} ids, more than the {MAX_IDS} one command can name; give "
                               "fewer, or select by --label, --prompt or --max-drift instead.")
    return ids


def scorer_ref(text: str) -> str:
    """An argparse type for ``--scorer`` of ``report`` and ``review --auto``: a model as given to ``score``, or a
    scorer id (``3`` or ``#3``), which must be one SQLite can hold."""
    if text.lstrip("#").isdigit():
        check_row_id(int(text.lstrip("#")))
    return text


def add_workspace_argument(parser: argparse.ArgumentParser, *, must_exist: bool = True) -> None:
    """``--workspace`` (and a ``--verbose`` that may also follow the command)."""
    parser.add_argument("--workspace", "-w", type=Path, required=True,
                        help="workspace folder (manifest.sqlite + images/)"
                             + ("" if must_exist else "; created if missing"))
    parser.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                        help="log details and show tracebacks (same as the global --verbose)")


def add_model_arguments(parser: argparse.ArgumentParser, *, preset: bool = True) -> None:
    """The generation flags shared by every command that runs the model: a preset, and flags that override it.
    Without `preset` there is no ``--preset`` (``compare-settings`` names two presets with ``--a`` and ``--b``)."""
    from ..engine.generation import DEFAULT_MODEL, SCHEDULERS, GenerationSettings  # numpy only, no torch
    from ..engine.presets import PRESETS

    d = GenerationSettings()
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"diffusers InstructPix2Pix model id or local folder (default {DEFAULT_MODEL}); "
                        "'tiny-random' is an untrained miniature for tests and offline demos")
    if preset:
        g.add_argument("--preset", default="reference", choices=list(PRESETS),
                       help="a named bundle of scheduler, steps and guidance (default reference: today's output; "
                            "fast: 1/2 the UNet evaluations; fastest: 1/6; lcm: needs --lora); a flag below given "
                            "beside it wins over it; README 'Presets' says what each costs and risks")
    g.add_argument("--scheduler", default=None, choices=list(SCHEDULERS),
                   help=f"diffusers scheduler (default {d.scheduler}, the authors' Euler-ancestral, or the preset's)")
    g.add_argument("--steps", type=int, default=None,
                   help=f"denoising steps (default {d.steps} or the preset's; the authors' code uses 100)")
    g.add_argument("--guidance-scale", type=float, default=None,
                   help=f"text guidance scale (default {d.guidance_scale} or the preset's)")
    g.add_argument("--image-guidance-scale", type=float, default=None,
                   help=f"image guidance scale (default {d.image_guidance_scale} or the preset's); 1.0 runs 2 "
                        "guidance branches instead of 3 (the unconditional one cancels exactly)")
    g.add_argument("--lora", default=None,
                   help="a LoRA adapter for the UNet: a local folder or .safetensors file, or a Hub id (recorded "
                        "in the manifest by name and content hash); an LCM LoRA goes with --preset lcm")
    g.add_argument("--lora-scale", type=float, default=None, help=f"strength of --lora (default {d.lora_scale})")
    g.add_argument("--cache-interval", type=int, default=None,
                   help="feature caching between steps (DeepCache-style): the UNet's deep blocks run every N-th "
                        "step, the shallow ones every step; 1 is off and exact (default 1); 3 is about 1.7x faster "
                        "with a small change in Î")
    g.add_argument("--resolution", type=int, default=d.resolution,
                   help=f"working resolution of the long side, a multiple of 8 (default {d.resolution}); "
                        "the aspect ratio is kept and Î is resized back to the source's size")
    g.add_argument("--device", default=d.device, help="cpu, cuda, cuda:1, ... (default auto: cuda when available)")
    g.add_argument("--dtype", default=d.dtype, choices=["auto", "float32", "float16", "bfloat16"],
                   help="model precision (default auto: float16 on GPU, float32 on CPU)")
    g.add_argument("--revision", default=None, help="model revision (branch, tag or commit) for hub ids")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet (on a GPU: faster after the first batches of each size, which "
                        "compile; not for ZeroGPU Spaces)")


def settings_from_args(args: argparse.Namespace, preset: str | None = None):
    """The GenerationSettings of the flags: the preset's (`preset`, default ``--preset``), with every flag given
    beside it on top."""
    from ..engine.generation import GenerationSettings
    from ..engine.presets import apply_preset

    base = GenerationSettings(model=args.model, resolution=args.resolution, device=args.device, dtype=args.dtype,
                              revision=args.revision, compile=args.compile)
    return apply_preset(preset or args.preset, base, scheduler=args.scheduler, steps=args.steps,
                        guidance_scale=args.guidance_scale, image_guidance_scale=args.image_guidance_scale,
                        lora=args.lora, lora_scale=args.lora_scale, cache_interval=args.cache_interval)


def add_library_arguments(parser: argparse.ArgumentParser) -> None:
    """Prompt and fractal library flags."""
    g = parser.add_argument_group("libraries")
    g.add_argument("--prompts", default=None,
                   help='comma-separated prompts that replace the library, e.g. "autumn,snowy"')
    g.add_argument("--prompt-file", type=Path, default=None,
                   help="a prompt library file (.json or .toml, the format of the shipped assets/prompts/default.json)")
    g.add_argument("--fractal-dir", type=Path, default=None,
                   help="a folder of fractal images (default: the shipped procedural set in assets/fractals/)")


def prompt_library_from_args(args: argparse.Namespace, fallback=None):
    """The library the flags ask for, else `fallback`, else the paper's default."""
    from ..engine.prompts import PromptLibrary
    from ..errors import BadArgumentError

    if args.prompts and args.prompt_file:
        raise BadArgumentError("give --prompts or --prompt-file, not both")
    if args.prompt_file:
        return _warn_long_prompts(PromptLibrary.load(args.prompt_file))
    if args.prompts:
        library = PromptLibrary.from_texts([p.strip() for p in args.prompts.split(",")])
        library.validate()
        return _warn_long_prompts(library)
    return fallback if fallback is not None else PromptLibrary.default()


def _warn_long_prompts(library):
    """Say on stderr which prompts the text encoder would cut off (estimated: the model is not loaded yet)."""
    for warning in library.warnings():
        print(f"warning: {warning}", file=sys.stderr)
    return library


def fractal_library_from_args(args: argparse.Namespace):
    from ..engine.fractals import FractalLibrary

    return FractalLibrary.from_folder(args.fractal_dir) if args.fractal_dir else FractalLibrary.default()


def add_scorer_arguments(parser: argparse.ArgumentParser) -> None:
    """``--scorer`` and ``--class-map`` (augment and score)."""
    g = parser.add_argument_group("scores")
    g.add_argument("--scorer", default="auto",
                   help="label-consistency scorer: a CLIP model id or local folder; auto (default): "
                        "openai/clip-vit-base-patch32, or tiny-random-clip (untrained, offline) for a test generator "
                        "model; none: no scores (`score --scorer none`: the quality flags only)")
    g.add_argument("--class-map", type=Path, default=None, metavar="FILE",
                   help="class names for the class folders: 'FOLDER NAME' lines (.txt, e.g. ImageNet's "
                        "LOC_synset_mapping.txt), a JSON object or a two-column CSV; remembered in the workspace "
                        "(default: the remembered one, else folder names with _ and - as spaces)")
