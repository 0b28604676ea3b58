"""The denoising schedulers a generation may use, by the names of ``GenerationSettings.scheduler``.

Each is diffusers' own class, built from the model's scheduler configuration (its noise schedule) once per batch,
so that no state is shared between batches or threads:

* ``euler-a``: Euler-ancestral, the authors' choice and today's default; draws noise at every step (from each
  request's own generator);
* ``dpm++``: DPM-Solver++ multistep (2nd order), deterministic, good at 10-20 steps;
* ``unipc``: UniPC multistep, deterministic, good at 5-10 steps;
* ``ddim``: DDIM (eta 0), deterministic;
* ``lcm``: the latent-consistency scheduler, for an LCM LoRA at 2-8 steps; draws noise between steps.

:func:`step` passes the requests' generators to the schedulers that draw noise and not to the others.
"""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

from .generation import SCHEDULERS

__all__ = ["make_scheduler", "step"]

_OPTIONS: dict[str, dict[str, Any]] = {
    "dpm++": {"algorithm_type": "dpmsolver++", "solver_order": 2},
    "ddim": {},
    "unipc": {},
    "lcm": {},
    "euler-a": {},
}


def make_scheduler(name: str, config: Any, *, steps: int, device: Any):
    """A fresh scheduler `name` on the model's schedule `config`, with its timesteps set for `steps`."""
    import diffusers

    cls = getattr(diffusers, SCHEDULERS[name])
    scheduler = cls.from_config(config, **_OPTIONS[name])
    scheduler.set_timesteps(steps, device=device)
    return scheduler


@lru_cache(maxsize=None)
def _takes_generator(cls: type) -> bool:
    return "generator" in inspect.signature(cls.step).parameters


def step(scheduler: Any, noise: Any, t: Any, latents: Any, generators: list) -> Any:
    """One scheduler step; the requests' generators go to the schedulers that draw noise."""
    if _takes_generator(type(scheduler)):
        return scheduler.step(noise, t, latents, generator=generators, return_dict=False)[0]
    return scheduler.step(noise, t, latents, return_dict=False)[0]
