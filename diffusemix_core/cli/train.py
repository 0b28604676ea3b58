"""The ``train`` subcommand of ``python -m diffusemix_core``: does DiffuseMix help on my data?

The handler takes the argparse namespace and returns an exit status; errors of the project's types propagate to
``cli.main``, which prints them in one line (the traceback with ``--verbose``). torch and transformers are imported
only when the command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from .args import whole_number
from .console import EXIT_INTERRUPTED

__all__ = ["add_subcommand", "run_train"]

EXAMPLE = (
    "example: python -m diffusemix_core train --workspace ws --val-dir data/val --model resnet18 --epochs 30\n"
    "offline smoke run: python -m diffusemix_core train --workspace ws --val-dir data/val --model resnet-tiny "
    "--size 32 --epochs 2 --device cpu\n"
    "which prompts help: python -m diffusemix_core train --workspace ws --val-dir data/val --arms baseline "
    "--per-prompt --repeats 3\n"
    "a p sweep and a curriculum: ... --arms baseline,online --p 0.25,0.5,0.75 --p-schedule linear:0.1-0.5"
)


_positive_int = whole_number(1)
_count = whole_number(0)


def _lam(text: str) -> float | tuple[float, float]:
    """'0.2' or '0.1,0.3' (a range λ is drawn from uniformly)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or LOW,HIGH, got {text!r}") from None
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return values[0], values[1]
    raise argparse.ArgumentTypeError(f"expected a number or LOW,HIGH, got {text!r}")


def _p_list(text: str) -> list[float]:
    """'0.5' or '0.25,0.5,0.75'."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers in [0, 1] separated by commas, got {text!r}") from None


def add_subcommand(subparsers) -> None:
    """Register ``train`` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "train",
        help="train one classifier per arm (baseline, export, online) and compare them on a validation folder",
        description=textwrap.fill(
            "Train one image classifier per arm with the same seed, schedule and validation set: baseline (the "
            "workspace's source images only), export (the originals plus the approved augmentations, exported as "
            "files with the workspace's export), online (the originals, re-mixed with probability --p from the "
            "cached Î with a fresh mask, fractal and λ every epoch). Every arm sees as many images per epoch as the "
            "workspace has sources. Writes results.csv (arm, epoch, loss, val_loss, top1, top5, ...), curves.png "
            "and summary.md into --out. GPU with mixed precision when there is one, else CPU.", width=100),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workspace", "-w", type=Path, required=True,
                   help="workspace folder made by `augment` (its source labels are the classes)")
    p.add_argument("--val-dir", type=Path, required=True,
                   help="validation images as DIR/<class>/<image>; the class folders must be the workspace's labels")
    p.add_argument("--verbose", "-v", action="store_true", default=argparse.SUPPRESS,
                   help="log details and show tracebacks (same as the global --verbose)")
    p.add_argument("--arms", default="baseline,export,online",
                   help="comma-separated arms among baseline, export, online (default: all three)")
    p.add_argument("--per-prompt", action="store_true",
                   help="add one arm per enabled prompt with Î ('prompt: <text>': the online dataset re-mixing only "
                        "that prompt's Î) and the baseline; their gains are stored in the workspace")
    p.add_argument("--leave-one-out", action="store_true",
                   help="add one arm per enabled prompt with Î ('without: <text>': every such prompt but that one)")
    p.add_argument("--repeats", type=_positive_int, default=1, metavar="K",
                   help="train every arm on K seeds (--seed, --seed+1, ...: weights, order and draws change); gains "
                        "get 95%% intervals paired by seed (default 1: no interval)")
    p.add_argument("--no-record", action="store_true",
                   help="do not store the per-prompt gains in the workspace (prompt_gains table)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: <workspace>-train beside the workspace)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results and the export of an earlier run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in logs)")

    m = p.add_argument_group("model and schedule")
    m.add_argument("--model", default="resnet18",
                   help="resnet18 or resnet50 (built from a ResNetConfig), resnet-tiny (tests, smoke runs), a Hugging "
                        "Face image-classification id (e.g. microsoft/resnet-50) or a local folder (default resnet18)")
    m.add_argument("--pretrained", action="store_true",
                   help="start from pretrained weights (resnet18/resnet50: microsoft/resnet-18/-50; a hub id or "
                        "folder: its weights) and fine-tune; default: train from scratch")
    m.add_argument("--epochs", type=_positive_int, default=30, help="epochs per arm (default 30)")
    m.add_argument("--batch-size", type=_positive_int, default=32, help="batch size (default 32)")
    m.add_argument("--lr", type=float, default=None,
                   help="SGD learning rate, cosine-annealed to 0 (default 0.1 from scratch, 0.01 pretrained, at "
                        "batch 128, scaled linearly with --batch-size)")
    m.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (default 5e-4)")
    m.add_argument("--size", type=_positive_int, default=224,
                   help="input side in pixels: shorter side resized, centre cropped (default 224)")
    m.add_argument("--seed", type=_count, default=0,
                   help="seed of the initial weights, the order of the images and every augmentation draw (default 0)")
    m.add_argument("--device", default="auto", help="auto (default: cuda when available), cpu, cuda, cuda:1, ...")
    m.add_argument("--workers", type=_count, default=None,
                   help="DataLoader worker processes (default: CPUs - 1, at most 8; 0 loads in the main process)")

    a = p.add_argument_group("augmentation")
    a.add_argument("--status", default="approved", choices=["approved", "pending", "rejected", "all"],
                   help="which augmentations the export and online arms use (default approved)")
    a.add_argument("--p", type=_p_list, nargs="+", default=[[0.5]], metavar="P",
                   help="online arms: probability that an item is a DiffuseMix image instead of the original "
                        "(default 0.5); several (0.25,0.5,0.75 or 0.25 0.5 0.75) make one online arm each")
    a.add_argument("--lam", type=_lam, nargs="+", default=[0.2], metavar="LAM",
                   help="online arms: fractal blend λ, a number or LOW,HIGH drawn uniformly (default 0.2, the "
                        "paper's); several, separated by spaces (0.1 0.2 0.1,0.3), make one online arm each")
    a.add_argument("--p-schedule", default=None, metavar="linear:START-END",
                   help="add an online arm whose p ramps linearly over the epochs, e.g. linear:0.1-0.5 (a "
                        "curriculum: few DiffuseMix images first, more later)")
    a.add_argument("--jsd", action="store_true",
                   help="online arm: add AugMix's Jensen-Shannon consistency loss over (original, two DiffuseMix "
                        "views), as the paper does; three forward passes per image")
    a.add_argument("--jsd-weight", type=float, default=12.0, help="weight of the JSD term (default 12, AugMix's)")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from ..training.arms import measured_prompts, parse_p_schedule, plan_arms
    from ..training.trainer import TrainSettings, train_arms

    ps = [p for group in args.p for p in group]
    settings = TrainSettings(
        model=args.model, pretrained=args.pretrained, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, jsd=args.jsd, jsd_weight=args.jsd_weight, p=ps[0], lam=args.lam[0],
        status=args.status, size=args.size, seed=args.seed, device=args.device, workers=args.workers,
    )
    settings.check()
    out = args.out if args.out is not None else args.workspace.parent / f"{args.workspace.name}-train"
    prompts = measured_prompts(args.workspace, args.status) if args.per_prompt or args.leave_one_out else []
    arms = plan_arms(args.arms.split(","), ps=ps, lams=args.lam,
                     schedule=parse_p_schedule(args.p_schedule) if args.p_schedule else None,
                     per_prompt=prompts if args.per_prompt else (), leave_one_out=prompts if args.leave_one_out else ())
    try:
        report = train_arms(args.workspace, args.val_dir, out, arms=arms, settings=settings, repeats=args.repeats,
                            overwrite=args.overwrite, progress=not args.no_progress, record_gains=not args.no_record)
    except KeyboardInterrupt:
        print(f"interrupted: the epochs finished so far are in {out / 'results.csv'}.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(report.summary_md.read_text(encoding="utf-8").rstrip())
    written = [report.results_csv, report.per_class_csv, report.curves_png, report.prompt_gains_png,
               report.gains_png, report.summary_md]
    print(f"\nwrote {', '.join(str(p) for p in written if p is not None)}")
    if report.stored_gains:
        print(f"stored {report.stored_gains} prompt gain(s) in '{args.workspace}' (see `prompts --workspace "
              f"{args.workspace}`)")
    return 0
