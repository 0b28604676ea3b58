"""The Export tab's work without Gradio: one zip per export in the exports folder, and the list of past exports
(file names only: no answer names a server path)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from ..errors import BadArgumentError
from ..workspace.folder import Workspace

__all__ = ["EXPORT_COLUMNS", "Exports"]

EXPORT_COLUMNS = {"created_at": "when", "status_filter": "status", "count": "augmentations",
                  "originals": "originals", "zip_path": "zip", "path": "folder"}


class Exports:
    """Exports of the workspace into `folder` (outside the workspace: the app serves it, never the workspace)."""

    def __init__(self, workspace: Workspace, folder: Path) -> None:
        self.workspace, self.folder = workspace, Path(folder)

    def export(self, status: str = "approved", include_originals: bool = False) -> tuple[Path, str]:
        """The augmentations with this status as one zip (ImageFolder + metadata.csv + manifest.sqlite), and a
        sentence saying how many. Nothing with that status: BadArgumentError (no empty zip is written or listed)."""
        by_status = self.workspace.manifest.summary()["by_status"]
        if not (sum(by_status.values()) if status == "all" else by_status.get(status, 0)):
            what = "augmentations" if status == "all" else f"{status} augmentations"
            raise BadArgumentError(f"Nothing to export: the workspace has no {what}; approve some in Curate (or "
                                   "pick another status) first.")
        target = self.folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{status}-{uuid.uuid4().hex[:4]}"
        result = self.workspace.export(target, status=status, include_originals=bool(include_originals),
                                       make_zip=True)
        noun = "augmentation" if result.count == 1 else "augmentations"
        return result.zip_path, f"Exported {result.count} {noun} to {result.zip_path.name}."

    def past(self) -> list[list]:
        """Past exports, newest first, as rows of EXPORT_COLUMNS (file and folder names, not paths)."""
        rows = []
        for row in self.workspace.manifest.list_exports(training=False)[::-1]:
            row = dict(row, zip_path=Path(row["zip_path"]).name if row.get("zip_path") else "",
                       path=Path(row["path"]).name)
            rows.append([row.get(key) for key in EXPORT_COLUMNS])
        return rows
