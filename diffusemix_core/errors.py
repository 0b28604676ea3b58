"""Exception types of DiffuseMix Studio: one type per failure family.

Every message is one sentence that names the offending file or value and says what to do about it, so the CLI
can print ``str(error)`` on one line and the app can show it as is.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "DiffuseMixError",
    "BadImageError",
    "ModelUnavailableError",
    "BadPromptError",
    "BadArgumentError",
    "WorkspaceError",
]


class DiffuseMixError(Exception):
    """Base class of every error raised on purpose by DiffuseMix Studio."""


class BadImageError(DiffuseMixError):
    """An input image cannot be used: missing, empty, not an image, truncated, corrupt or too large.

    ``path`` is the file (``None`` for in-memory sources), ``reason`` the cause in a few words.
    """

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        where = f"image file '{self.path}'" if self.path is not None else "image"
        super().__init__(
            f"Cannot read {where}: {reason}; replace or remove the file (or pass a valid image) and try again."
        )


class ModelUnavailableError(DiffuseMixError):
    """A diffusion model cannot be loaded (not cached and no network, bad folder, ...).

    ``model`` is the model id or folder; ``detail`` optionally replaces the default explanation.
    """

    def __init__(self, model: str, detail: str | None = None) -> None:
        self.model = model
        self.detail = detail
        if detail is None:
            detail = (
                f"Model '{model}' is not available on this machine and cannot be downloaded now; "
                "pass --model PATH to a local diffusers folder, or download it once on a connected machine "
                f"(`hf download {model}`)."
            )
        super().__init__(detail)


class BadPromptError(DiffuseMixError):
    """The prompt library or a prompt is invalid (empty, duplicate, too long, bad template, bad file)."""


class BadArgumentError(DiffuseMixError):
    """A parameter value is invalid (λ outside [0, 1], unknown mask kind, bad resolution, bad array shape, ...)."""


class WorkspaceError(DiffuseMixError):
    """A workspace operation cannot proceed (unsafe export target, non-empty folder, bad label path, ...)."""
