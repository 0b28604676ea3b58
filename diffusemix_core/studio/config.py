"""Everything the app is started with (:class:`AppConfig`), and what follows from it: where files go, whether
typed server folders may be read, whether the app is reachable from other machines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..engine.generation import DEFAULT_MODEL  # torch-free at import: the model loads lazily
from ..engine.test_models import is_test_model
from .served import DEFAULT_INTERACTIVE_PIXELS

__all__ = ["AppConfig", "LOOPBACK_HOSTS"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class AppConfig:
    """Everything the app is started with; built from flags, then environment variables, then defaults."""

    model: str = DEFAULT_MODEL
    workspace: Path = Path("workspace")
    resolution: int = 512
    steps: int | None = None  # None: the preset's (20 for reference)
    preset: str = "reference"  # the default preset of Explore and Dataset (studio.model.APP_PRESETS)
    device: str = "auto"
    fractal_dir: Path | None = None
    space_mode: bool = False
    max_file_size: str = "200mb"
    exports: Path | None = None  # default: <workspace>-exports beside the workspace (it may not be inside it)
    local: bool = True  # served on loopback only (no --share, no Space): bytes are free, CPU time is not
    max_pixels: int = DEFAULT_INTERACTIVE_PIXELS  # largest image Explore, /augment, /remix and Curate take
    data_root: Path | None = None  # typed dataset folders must be inside it (needed unless on loopback)
    upload_quota: int | None = 10 * 1000**3  # bytes the extracted uploaded datasets may take
    ray_address: str | None = None  # Dataset runs go to this Ray cluster (--engine ray) when set
    result_cache_bytes: int = 512 * 1024**2  # recent results kept for re-mixing
    stage_cache_bytes: int = 1024**3  # stage PNGs on disk

    @property
    def typed_folders(self) -> bool:
        """Whether a typed server folder may be augmented: only on loopback, or inside --data-root."""
        return (self.local or self.data_root is not None) and not self.space_mode

    @property
    def exports_dir(self) -> Path:
        return self.exports or self.workspace.parent / f"{self.workspace.name}-exports"

    @property
    def is_test_model(self) -> bool:
        return is_test_model(self.model)
