"""Feature caching between denoising steps (DeepCache, Ma et al. 2024): the deep UNet runs every N-th step only.

Neighbouring steps of a diffusion loop change the UNet's deep, low-resolution features very little. At a *full*
step the UNet runs whole and the feature entering its last (finest) up block is kept; at the N−1 *shallow* steps
that follow, only the first down block and the last up block run, on the kept deep feature:

    conv_in → down_blocks[0] ─────────────────────────────── skip connections ──┐
                           (down_blocks[1:], mid_block, up_blocks[:-1]: cached) → up_blocks[-1] → conv_out

``cache_interval`` 1 turns it off (the exact loop). The deep part holds most of the UNet's layers, so interval 3
runs about 1.7× faster on the full SD-1.5 UNet at 256² (``bench/generation.py --modes``), at a small change in Î.

This is our own small hook rather than the ``DeepCache`` package: that package patches the shared UNet's forward
and takes its step index from ``pipe.scheduler``, which our loop (a scheduler per batch, a UNet shared by
generators of other settings) does not use. Nothing here modifies the UNet: the full step records the deep feature
with a forward hook that is removed after the call and listens to this thread only, and the shallow step calls the
UNet's own blocks.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["FeatureCache"]


class FeatureCache:
    """One batch's cache: call it in place of the UNet, once per step, with the step's index."""

    def __init__(self, unet: Any, interval: int) -> None:
        self.unet, self.interval = unet, interval
        self._deep: Any = None
        last = unet.up_blocks[-1]
        self._skips = len(last.resnets)  # skip connections the last up block takes: conv_in's and down_blocks[0]'s
        if self._skips > 1 + len(unet.down_blocks[0].resnets):
            raise ValueError("this UNet's last up block takes skips from below its first down block; caching is off")

    def is_full(self, step_index: int) -> bool:
        return self._deep is None or step_index % self.interval == 0

    def __call__(self, sample: Any, t: Any, encoder_hidden_states: Any, step_index: int) -> Any:
        if self.is_full(step_index):
            return self._full(sample, t, encoder_hidden_states)
        return self._shallow(sample, t, encoder_hidden_states)

    def _full(self, sample: Any, t: Any, encoder_hidden_states: Any) -> Any:
        owner = threading.get_ident()

        def keep(module, inputs, output):
            if threading.get_ident() == owner:
                self._deep = output

        handle = self.unet.up_blocks[-2].register_forward_hook(keep)
        try:
            return self.unet(sample, t, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
        finally:
            handle.remove()

    def _shallow(self, sample: Any, t: Any, encoder_hidden_states: Any) -> Any:
        unet = self.unet
        emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=t), None)
        if unet.time_embed_act is not None:
            emb = unet.time_embed_act(emb)
        states = unet.process_encoder_hidden_states(encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=None)
        hidden = unet.conv_in(sample)
        first = unet.down_blocks[0]
        if getattr(first, "has_cross_attention", False):
            _, res = first(hidden_states=hidden, temb=emb, encoder_hidden_states=states)
        else:
            _, res = first(hidden_states=hidden, temb=emb)
        skips = ((hidden,) + tuple(res))[: self._skips]
        last = unet.up_blocks[-1]
        if getattr(last, "has_cross_attention", False):
            out = last(hidden_states=self._deep, temb=emb, res_hidden_states_tuple=skips, encoder_hidden_states=states)
        else:
            out = last(hidden_states=self._deep, temb=emb, res_hidden_states_tuple=skips)
        if unet.conv_norm_out is not None:
            out = unet.conv_act(unet.conv_norm_out(out))
        return unet.conv_out(out)
