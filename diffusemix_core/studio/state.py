"""What the app holds for all its sessions (:class:`Studio`): the workspace, the model, the caches, and one object
per tab's work. Per-session state lives in the browser (Gradio State values) and is passed to each call;
everything written goes through the Workspace (SQLite in WAL mode, one connection per call), so concurrent
sessions lose nothing."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from ..engine.fractals import FractalLibrary
from ..workspace.folder import Workspace
from ..workspace.uploads import Uploads
from .compare import ComparePresets
from .config import AppConfig
from .dataset import DatasetRuns
from .explore import Explore
from .measure import PromptStudy
from .exports import Exports
from .jobs import Jobs
from .model import ModelHolder
from .prompts import PromptEditor
from .served import ResultCache, StageFiles

__all__ = ["Studio"]


class Studio:
    """The app's shared state, built from its config; `stage_root` is where display files are written (the app
    gives a folder its web server serves as is; default: a new temporary folder)."""

    def __init__(self, config: AppConfig, *, stage_root: Path | None = None) -> None:
        self.config = config
        self.workspace = Workspace(config.workspace)
        self.uploads = Uploads(config.workspace, quota_bytes=config.upload_quota)
        self.model = ModelHolder(config.model, device=config.device, steps=config.steps, resolution=config.resolution,
                                 preset=config.preset)
        self.results = ResultCache(max_bytes=config.result_cache_bytes)
        self.fractals = (
            FractalLibrary.from_folder(config.fractal_dir) if config.fractal_dir else FractalLibrary.default()
        )
        # Stage PNGs stay lossless; on loopback they are stored uncompressed (a 512² re-mix saves ~20 ms of zlib),
        # over a network (--share, --host, a Space) zlib's fastest level saves bandwidth instead.
        root = Path(stage_root) if stage_root is not None else Path(tempfile.mkdtemp(prefix="diffusemix-stages-"))
        self.files = StageFiles(root / uuid.uuid4().hex[:12], compress_level=0 if config.local else 1,
                                max_bytes=config.stage_cache_bytes)
        self.previews = self.files.root / "previews"  # served copies of the workspace's previews (never served)
        self.explore = Explore(self.workspace, self.model, self.fractals, self.results, self.files,
                               max_pixels=config.max_pixels)
        self.compare = ComparePresets(self.explore)
        self.prompts = PromptEditor(self.workspace, config.exports_dir / "prompts", self.model.token_counter)
        self.datasets = DatasetRuns(self.workspace, self.uploads, self.model, self.fractals,
                                    typed_folders=config.typed_folders, data_root=config.data_root,
                                    ray_address=config.ray_address)
        self.exports = Exports(self.workspace, config.exports_dir)
        self.prompt_study = PromptStudy(self.workspace, self.datasets.folder, config.exports_dir / "prompt-study",
                                        self.fractals, device=config.device)
        self.jobs = Jobs(self.workspace, device=config.device)  # scoring from the app (jobs.py)
