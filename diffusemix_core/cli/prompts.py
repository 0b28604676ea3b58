"""The ``prompts`` command of ``python -m diffusemix_core``: the workspace's prompt library with what training
measured for each prompt (``train --per-prompt``), and the cautious switch-off of the harmful ones.

``--disable-harmful`` lists the enabled prompts whose latest measured gain is below zero with a 95% interval below
zero too, and asks before it writes (``--yes`` for scripts); nothing is disabled silently, and a gain measured with
one seed (no interval) is never enough.
"""

from __future__ import annotations

import argparse
import sys

from .args import add_workspace_argument

__all__ = ["add_subcommand", "run_prompts"]


def add_subcommand(subparsers) -> None:
    """Register ``prompts`` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "prompts",
        help="the prompt library with each prompt's measured gain (train --per-prompt); disable harmful prompts",
        description="List the workspace's prompts (enabled or not) with the latest gain training measured for each "
                    "(`train --per-prompt --repeats K`: final validation top-1 of the prompt's arm minus the "
                    "baseline's, in points, with its 95%% interval paired by seed) and, when measured, its "
                    "leave-one-out contribution. --disable-harmful switches off the enabled prompts whose gain is "
                    "below zero with an interval below zero, after showing them and asking.",
        epilog="example: python -m diffusemix_core prompts --workspace ws --disable-harmful",
    )
    add_workspace_argument(p)
    p.add_argument("--disable-harmful", action="store_true",
                   help="disable the enabled prompts whose measured gain and its whole 95%% interval are below 0 "
                        "(asks first)")
    p.add_argument("--yes", "-y", action="store_true", help="with --disable-harmful: do not ask (scripts)")
    p.set_defaults(func=run_prompts)



def run_prompts(args: argparse.Namespace) -> int:
    from ..workspace.folder import Workspace
    from ..workspace.prompt_gains import describe_gain, disable_prompts, harmful_prompts, latest_prompt_gains

    workspace = Workspace(args.workspace, create=False)
    library = workspace.manifest.get_prompt_library()
    alone, loo = latest_prompt_gains(workspace), latest_prompt_gains(workspace, "leave-one-out")
    print(f"prompt library of '{args.workspace}': {len(library.entries)} prompt(s), {len(library.enabled())} "
          "enabled; gain = final top-1 of the prompt's arm minus the baseline's (points, 95% interval)")
    table = [["enabled", "prompt", "gain", "leave-one-out", "measured"]]
    for entry in library.entries:
        row = alone.get(entry.text)
        measured = f"{row['model']}, {row['epochs']} epochs, {row['created_at'][:10]}" if row else "-"
        table.append(["yes" if entry.enabled else "no", entry.text, describe_gain(row),
                      describe_gain(loo.get(entry.text)), measured])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip())
    if not args.disable_harmful:
        return 0
    harmful = harmful_prompts(workspace)
    if not harmful:
        print("\nno harmful prompt: none has a gain below 0 with its 95% interval below 0 (measure with "
              "`train --per-prompt --repeats 3`).")
        return 0
    print(f"\n{len(harmful)} prompt(s) make the model worse beyond the noise:")
    for row in harmful:
        print(f"  {row['prompt']}: {describe_gain(row)}")
    if not args.yes:
        try:
            answer = input(f"disable {'it' if len(harmful) == 1 else 'them'}? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing changed.", file=sys.stderr)
            return 1
    disable_prompts(workspace, [row["prompt"] for row in harmful])
    print(f"disabled {len(harmful)} prompt(s); they stay in the library (re-enable them in the app or the file).")
    return 0
