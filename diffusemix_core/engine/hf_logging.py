"""One transformers warning kept out of every command's output: the torchvision fallback.

The project does not install torchvision (it would pull a second multi-GB torch build). Without it, transformers 5
answers a request for ``CLIPImageProcessor`` (or ``SiglipImageProcessor``) with its PIL class and logs a warning
that says so. diffusers' pipeline modules import those names, so every command that loads a model printed two such
lines, although the PIL class is exactly what we use (the scorer asks for it by name). :func:`quiet_torchvision_fallback`
drops that one message, by a filter on the logger that writes it; every other transformers message still shows.
Nothing is imported: the filter sits on the logger's name, before transformers is loaded.
"""

from __future__ import annotations

import logging

__all__ = ["TORCHVISION_FALLBACK", "quiet_torchvision_fallback"]

TORCHVISION_FALLBACK = "requires torchvision (not installed); falling back to"
_LOGGER = "transformers.utils.import_utils"  # where transformers 5 logs the fallback


class _DropTorchvisionFallback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return TORCHVISION_FALLBACK not in record.getMessage()


def quiet_torchvision_fallback() -> None:
    """Install the filter once (idempotent)."""
    logger = logging.getLogger(_LOGGER)
    if not any(isinstance(f, _DropTorchvisionFallback) for f in logger.filters):
        logger.addFilter(_DropTorchvisionFallback())
