"""Curate's review mode without Gradio: one augmentation after another, decided one at a time.

A review walks the ids of the Curate filter in its sort order, taken when the review starts (:class:`Walk`: a value
held by the browser session), so deciding an item never reorders what comes next. Each decision is one history
entry (one id: not a bulk decision); *undo* reverts the session's last single decision by recording the previous
status again (a second history entry), so the history shows both. The next item's I, Î and A files are prepared in
a background thread while the person looks at the current one (:class:`Reviewer`), so a key press shows it at once.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from ..curation import detail as details
from ..curation.filters import CurationQuery, matching_ids
from ..errors import BadArgumentError
from ..workspace.decisions import decide
from ..workspace.folder import Workspace
from .served import StageFiles

__all__ = ["KEYS", "ReviewItem", "Reviewer", "Walk"]

KEYS = "**a** approve · **r** reject · **space** or **→** skip · **←** previous · **z** undo"
SHOWN = ("original", "generated", "final")  # the stages a review shows large: I, Î, A


@dataclass(frozen=True)
class Walk:
    """A review session: the ids being walked, where it stands, and its own decisions (for undo)."""

    ids: tuple[int, ...] = ()
    position: int = 0
    done: tuple[tuple[int, str], ...] = ()  # (id, status before) of each decision made here, oldest first
    what: str = ""  # the filter, in words

    @property
    def current(self) -> int | None:
        return self.ids[self.position] if 0 <= self.position < len(self.ids) else None

    def moved(self, step: int) -> Walk:
        return dataclasses.replace(self, position=min(max(self.position + step, 0), len(self.ids)))

    def where(self) -> str:
        if not self.ids:
            return "Nothing to review: no augmentation matches the filter."
        if self.current is None:
            return f"All {len(self.ids)} reviewed ({len(self.done)} decisions) · {self.what}."
        return f"{self.position + 1} / {len(self.ids)} · {len(self.done)} decided · {self.what}"


@dataclass(frozen=True)
class ReviewItem:
    """What the review shows of one augmentation: the files of I, Î and A and a Markdown summary."""

    aug_id: int
    files: tuple[str, str, str]
    text: str


class Reviewer:
    """Start, decide, skip, go back and undo; prepares the next item ahead (one thread for the whole app)."""

    def __init__(self, workspace: Workspace, files: StageFiles, record_of) -> None:
        self.workspace, self.files, self.record_of = workspace, files, record_of
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="review-prefetch")
        self._ahead: dict[int, Future] = {}
        self._lock = threading.Lock()

    # -- the walk -------------------------------------------------------------------------------------------
    def start(self, query: CurationQuery | None) -> Walk:
        query = query or CurationQuery()
        walk = Walk(tuple(matching_ids(self.workspace, query)), 0, (), query.describe())
        self.prefetch(walk)
        return walk

    def decide(self, walk: Walk, status: str) -> Walk:
        """`status` for the current item (one history entry), then the next item."""
        aug_id = self._current(walk)
        before = self.workspace.manifest.get_augmentation(aug_id)["status"]
        decide(self.workspace.manifest, status, origin="app", ids=[aug_id], bulk=False, note={"review": "one by one"})
        return dataclasses.replace(walk.moved(1), done=(*walk.done, (aug_id, before)))

    def undo(self, walk: Walk) -> tuple[Walk, str]:
        """Revert this session's last decision (its item gets its previous status back) and show that item."""
        if not walk.done:
            raise BadArgumentError("Nothing to undo: no decision was made in this review yet.")
        aug_id, before = walk.done[-1]
        decide(self.workspace.manifest, before, origin="app", ids=[aug_id], bulk=False,
               note={"review": "undo"})
        position = walk.ids.index(aug_id) if aug_id in walk.ids else walk.position
        return (dataclasses.replace(walk, position=position, done=walk.done[:-1]),
                f"Undone: #{aug_id} is {before} again.")

    @staticmethod
    def _current(walk: Walk) -> int:
        if walk.current is None:
            raise BadArgumentError("Nothing to decide: start a review (or the filter's items are all reviewed).")
        return walk.current

    # -- the items ------------------------------------------------------------------------------------------
    def item(self, aug_id: int) -> ReviewItem:
        """The item's files and summary (prepared ahead when possible)."""
        with self._lock:
            future = self._ahead.pop(aug_id, None)
        return future.result() if future is not None else self._prepare(aug_id)

    def prefetch(self, walk: Walk, ahead: int = 2) -> None:
        """Prepare the next `ahead` items in the background (the current one included when not shown yet)."""
        for aug_id in walk.ids[walk.position:walk.position + ahead]:
            with self._lock:
                if aug_id not in self._ahead:
                    self._ahead[aug_id] = self._pool.submit(self._prepare, aug_id)
                while len(self._ahead) > 8:  # items skipped over by going back: forgotten
                    self._ahead.pop(next(iter(self._ahead)))

    def _prepare(self, aug_id: int) -> ReviewItem:
        record = self.record_of(aug_id)
        files = tuple(self.files.stage_paths(f"ws-{aug_id}", record, SHOWN))
        found = details.detail(self.workspace, aug_id)
        scores = " · ".join(f"{name}: " + ", ".join(f"{side} {value}" for side, value in (("A", a), ("Î", g)) if value)
                            for name, a, g in found.score_rows())
        return ReviewItem(aug_id, files, f"{found.summary()}  \n{scores}")
