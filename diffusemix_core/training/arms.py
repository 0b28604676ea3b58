"""What a training comparison compares: its arms, each a plain :class:`Arm` value, planned from the flags.

* ``baseline`` (the originals), ``export`` (plus the exported augmentation files), ``online`` (re-mixed every epoch);
* sweeps: ``--p 0.25,0.5,0.75`` and ``--lam 0.1,0.2`` give one online arm per (p, λ); ``--p-schedule
  linear:0.1-0.5`` adds an online arm whose p ramps over the epochs (a curriculum);
* per prompt: ``prompt: <text>``, the online dataset restricted to one prompt's Î (``--per-prompt``), and
  ``without: <text>``, every measured prompt but that one (``--leave-one-out``).

:func:`plan_arms` turns the flags into the list; :func:`measured_prompts` reads which prompts can be measured
(enabled in the library and with Î of the wanted status).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import BadArgumentError, WorkspaceError
from ..engine.mixing import check_lam_range

__all__ = ["BASE_ARMS", "Arm", "PSchedule", "measured_prompts", "parse_p_schedule", "plan_arms"]

BASE_ARMS: tuple[str, ...] = ("baseline", "export", "online")
PROMPT_PREFIX, WITHOUT_PREFIX = "prompt: ", "without: "


@dataclass(frozen=True)
class PSchedule:
    """p ramped linearly from `start` (first epoch) to `end` (last epoch)."""

    start: float
    end: float

    def at(self, epoch: int, epochs: int) -> float:
        """p of `epoch` (1-based) out of `epochs`."""
        if epochs <= 1:
            return self.start
        return self.start + (self.end - self.start) * (epoch - 1) / (epochs - 1)

    def __str__(self) -> str:
        return f"linear:{self.start:g}-{self.end:g}"


def parse_p_schedule(text: str) -> PSchedule:
    """``linear:START-END`` (e.g. ``linear:0.1-0.5``), both in [0, 1]."""
    match = re.fullmatch(r"\s*linear\s*:\s*([0-9.]+)\s*-\s*([0-9.]+)\s*", str(text))
    if not match:
        raise BadArgumentError(f"p schedule must read linear:START-END, e.g. linear:0.1-0.5; got {text!r}.")
    start, end = float(match[1]), float(match[2])
    if not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
        raise BadArgumentError(f"p schedule values must be in [0, 1], got {text!r}.")
    return PSchedule(start, end)


@dataclass(frozen=True)
class Arm:
    """One arm: what its epochs' images are drawn from."""

    name: str
    kind: str  # baseline | export | online | prompt | without
    p: float = 0.0
    lam: float | tuple[float, float] = 0.2
    schedule: PSchedule | None = None  # online: p per epoch instead of `p`
    prompts: tuple[str, ...] | None = None  # online, prompt, without: the prompts whose Î are used (None: all)
    prompt: str | None = None  # prompt, without: the prompt measured

    def p_at(self, epoch: int, epochs: int) -> float:
        if self.kind in ("baseline", "export"):
            return 0.0
        return self.schedule.at(epoch, epochs) if self.schedule is not None else self.p


def _lam_text(lam) -> str:
    return f"{lam:g}" if isinstance(lam, (int, float)) else f"{lam[0]:g}-{lam[1]:g}"


def plan_arms(arms: Sequence[str] = BASE_ARMS, *, ps: Sequence[float] = (0.5,),
              lams: Sequence[float | tuple[float, float]] = (0.2,), schedule: PSchedule | None = None,
              per_prompt: Sequence[str] = (), leave_one_out: Sequence[str] = ()) -> list[Arm]:
    """The arms, in order: baseline, export, the online sweep (one arm per p and λ), the scheduled arm, the
    per-prompt arms, the leave-one-out arms. Per-prompt and leave-one-out arms use the first p and λ, and bring the
    baseline in (their gains are measured against it)."""
    chosen = list(dict.fromkeys(a.strip() for a in arms if a.strip()))
    unknown = [a for a in chosen if a not in BASE_ARMS]
    if unknown:
        raise BadArgumentError(f"unknown arm(s) {', '.join(map(repr, unknown))}; choose among "
                               f"{', '.join(BASE_ARMS)} (per-prompt arms come from --per-prompt / --leave-one-out).")
    ps = [float(p) for p in ps] or [0.5]
    for p in ps:
        if not 0.0 <= p <= 1.0:
            raise BadArgumentError(f"p (the probability of a DiffuseMix image) must be in [0, 1], got {p!r}.")
    lams = list(lams) or [0.2]
    for lam in lams:
        check_lam_range(lam)
    if (per_prompt or leave_one_out) and "baseline" not in chosen:
        chosen.insert(0, "baseline")
    if not chosen and not schedule:
        raise BadArgumentError(f"no arm to train; choose among {', '.join(BASE_ARMS)}.")
    out: list[Arm] = []
    for kind in ("baseline", "export"):
        if kind in chosen:
            out.append(Arm(kind, kind))
    if "online" in chosen:
        for p in ps:
            for lam in lams:
                name = "online" + (f" p={p:g}" if len(ps) > 1 else "") + (f" λ={_lam_text(lam)}" if len(lams) > 1
                                                                           else "")
                out.append(Arm(name, "online", p=p, lam=lam))
    if schedule is not None:
        out.append(Arm(f"online p={schedule}", "online", p=schedule.start, lam=lams[0], schedule=schedule))
    for text in per_prompt:
        out.append(Arm(PROMPT_PREFIX + text, "prompt", p=ps[0], lam=lams[0], prompts=(text,), prompt=text))
    if leave_one_out and len(leave_one_out) < 2:
        raise BadArgumentError("leave-one-out needs at least two prompts with Î; use --per-prompt instead.")
    for text in leave_one_out:
        rest = tuple(t for t in leave_one_out if t != text)
        out.append(Arm(WITHOUT_PREFIX + text, "without", p=ps[0], lam=lams[0], prompts=rest, prompt=text))
    return out


def measured_prompts(workspace: Path, status: str) -> list[str]:
    """The enabled prompts of the workspace's library that have Î of `status` on usable sources (library order)."""
    from ..workspace.folder import Workspace
    from .dataset import manifest_prompt_counts, open_manifest

    enabled = Workspace(workspace, create=False).manifest.get_prompt_library().enabled()
    conn = open_manifest(workspace)
    try:
        counts = manifest_prompt_counts(conn, status)
    finally:
        conn.close()
    found = [t for t in enabled if counts.get(t)]
    if not found:
        raise WorkspaceError(f"workspace '{workspace}' has no {status} augmentations of an enabled prompt, so there "
                             "is no prompt to measure; review first or enable prompts in the library.")
    return found
