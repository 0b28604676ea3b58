"""The losses of training with DiffuseMix: AugMix's Jensen-Shannon consistency loss (the paper trains with it
"following AugMix"), used by the online arm with ``--jsd`` over a clean view and two DiffuseMix views."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["jsd_loss"]


def jsd_loss(logits_clean: torch.Tensor, logits_aug1: torch.Tensor, logits_aug2: torch.Tensor, *,
             weight: float = 1.0) -> torch.Tensor:
    """AugMix's Jensen-Shannon consistency loss: ``weight · (KL(p_c‖M) + KL(p_1‖M) + KL(p_2‖M)) / 3``.

    ``p_*`` are the softmax of each view's logits (batch, classes); ``M = clamp((p_c + p_1 + p_2) / 3, 1e-7, 1)``,
    clamped as in AugMix's code to keep the KL finite; each KL is averaged over the batch (``batchmean``).
    AugMix trains with ``cross_entropy(logits_clean, y) + 12 · JSD``: pass ``weight=12`` for that (the trainer's
    ``--jsd-weight`` defaults to 12); the default 1 gives the divergence itself. Computed in float32.
    """
    p_clean, p_aug1, p_aug2 = (F.softmax(x.float(), dim=1) for x in (logits_clean, logits_aug1, logits_aug2))
    log_mixture = torch.clamp((p_clean + p_aug1 + p_aug2) / 3.0, 1e-7, 1.0).log()
    divergence = (F.kl_div(log_mixture, p_clean, reduction="batchmean")
                  + F.kl_div(log_mixture, p_aug1, reduction="batchmean")
                  + F.kl_div(log_mixture, p_aug2, reduction="batchmean")) / 3.0
    return weight * divergence
