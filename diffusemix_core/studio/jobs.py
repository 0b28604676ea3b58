"""Work started from the app instead of the command line, without Gradio: scoring the workspace (what ``score``
does), with progress, time left and cancel, and a list of the jobs this app ran; and the scoring of items saved
from Explore, in the background, so that they have the scores the rest of the workspace has.

A job reports ``progress((done, total), desc=…)`` as the Dataset tab's run does; each browser session cancels its
own job. The list keeps the last :data:`KEPT` jobs of this app (memory only: the scores are in the workspace).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from ..curation.score_workspace import ScoreSummary, score_workspace
from ..curation.scores import LABEL_KIND, latest_scorer
from ..errors import DiffuseMixError
from ..workspace.folder import Workspace
from .model import gpu_task
from .run_table import duration_text

__all__ = ["JOB_COLUMNS", "Job", "Jobs", "describe_score"]

KEPT = 50
JOB_COLUMNS = ["#", "job", "started", "state", "progress", "time left", "result"]


def describe_score(summary: ScoreSummary) -> str:
    """What a score job did, in one sentence."""
    flags = "the quality flags"
    what = f"{summary.scorer} and {flags}" if summary.scorer else flags
    if summary.quality_id is None:
        return "Nothing to score: the workspace has no augmentations yet."
    if not summary.augmentations and not summary.generations and not summary.cancelled:
        return f"Nothing to score: every image already has scores from {what}."
    text = (f"Scored {summary.augmentations} augmentation(s) and {summary.generations} generated image(s) with {what} "
            f"in {duration_text(summary.seconds)}; {summary.flagged} flagged.")
    if summary.note:
        text += f" ⚠️ {summary.note[0].upper()}{summary.note[1:]}."
    if summary.cancelled:
        text += " Stopped early: score again to finish."
    return text


@dataclass
class Job:
    """One job of the list: what it is, where it stands, what it gave."""

    id: int
    kind: str
    started: float = field(default_factory=time.time)
    state: str = "running"  # running, done, cancelled, failed
    done: int = 0
    total: int = 0
    result: str = ""

    def row(self) -> list:
        left = "–"
        if self.state == "running" and self.done and self.total:
            elapsed = time.time() - self.started
            left = duration_text(elapsed / self.done * (self.total - self.done))
        return [self.id, self.kind, time.strftime("%H:%M:%S", time.localtime(self.started)), self.state,
                f"{self.done}/{self.total}" if self.total else "–", left, self.result]


@gpu_task
def score_job(workspace: Workspace, scorer: str | None, **kwargs) -> ScoreSummary:
    """The scoring of a job (decorated with spaces.GPU on ZeroGPU)."""
    return score_workspace(workspace, scorer, **kwargs)


class Jobs:
    """The app's jobs: score the workspace (one cancel per session), score saved items in the background."""

    def __init__(self, workspace: Workspace, *, device: str = "auto") -> None:
        self.workspace, self.device = workspace, device
        self._jobs: list[Job] = []
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-saved")
        self._queued = threading.Event()  # a background scoring is waiting to start (one is enough)

    def _new(self, kind: str) -> Job:
        with self._lock:
            job = Job(id=(self._jobs[-1].id + 1) if self._jobs else 1, kind=kind)
            self._jobs = [*self._jobs[-(KEPT - 1):], job]
            return job

    def table(self) -> list[list]:
        """The jobs, newest first, as rows of JOB_COLUMNS."""
        with self._lock:
            return [job.row() for job in reversed(self._jobs)]

    def running(self) -> bool:
        with self._lock:
            return any(job.state == "running" for job in self._jobs)

    def cancel(self, session: str | None) -> str:
        with self._lock:
            event = self._cancel.get(session or "default")
        if event is None:
            return "No job of this page is running."
        event.set()
        return "Cancelling after the current batch…"

    def score(self, scorer: str | None = "auto", *, session: str | None = None,
              progress: Callable[..., Any] | None = None) -> str:
        """Score every Î and A that has no score from `scorer` yet (``auto``: judged from the workspace's model;
        ``none``: the quality flags only), as ``score`` does; a sentence saying what was done."""
        tell = progress or (lambda *args, **kwargs: None)
        cancel = threading.Event()
        with self._lock:
            self._cancel[session or "default"] = cancel
        job = self._new(f"score ({scorer or 'auto'})")

        def report(done: int, total: int) -> None:
            job.done, job.total = done, total
            tell((done, max(total, 1)), desc=f"Scoring: {done}/{total} images", unit="images")

        try:
            tell(0, desc="Loading the scorer…")
            summary = score_job(self.workspace, (scorer or "auto").strip(), device=self.device, progress=report,
                                cancel=cancel)
        except DiffuseMixError as exc:
            job.state, job.result = "failed", str(exc)
            raise
        except BaseException as exc:  # noqa: BLE001  (the list says it failed; the error goes on)
            job.state, job.result = "failed", type(exc).__name__
            raise
        job.state = "cancelled" if summary.cancelled else "done"
        job.result = describe_score(summary)
        return job.result

    # -- items saved from Explore ----------------------------------------------------------------------------
    def score_saved(self) -> None:
        """Score what was saved since (in the background; scores with the workspace's latest label scorer, or the
        quality flags only when it has none). Errors are kept in the job list."""
        if self._queued.is_set():
            return  # a scoring that has yet to start covers this item too
        self._queued.set()
        self._background.submit(self._score_saved)

    def _score_saved(self) -> None:
        self._queued.clear()
        label = latest_scorer(self.workspace, LABEL_KIND)
        job = self._new("score saved items")
        try:
            summary = score_workspace(self.workspace, label["model"] if label else "none", device=self.device)
            job.state, job.result = "done", describe_score(summary)
        except Exception as exc:  # noqa: BLE001  (a background job: the list says why)
            job.state, job.result = "failed", str(exc)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until the background scoring is done (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._queued.is_set() and not self.running():
                return True
            time.sleep(0.05)
        return False
