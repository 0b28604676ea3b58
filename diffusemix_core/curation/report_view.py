"""The prompt report for people (which prompts break which classes?): the table of ``queries.prompt_report`` with
its columns named for people and its numbers rounded, the bars of one metric per prompt (over every class or one),
and the note that says whose label scores these are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BadArgumentError
from .captions import scorer_note
from .filters import ALL
from .queries import REPORT_COLUMNS, prompt_report
from .scores import LABEL_KIND, latest_scorer

if TYPE_CHECKING:
    from ..workspace.folder import Workspace

__all__ = ["REPORT_HEADERS", "REPORT_METRICS", "ReportView", "report_view"]


REPORT_METRICS: dict[str, str] = {
    "mean_label_prob": "mean label prob of A",
    "mean_generated_label_prob": "mean label prob of Î",
    "top1_share": "share with the true class on top",
    "flagged_share": "flagged share",
    "mean_probe_prob": "mean probe prob of A",
    "probe_low_share": "share below the probe's threshold",
    "human_approval_rate": "people's approval rate",
    "mean_drift": "mean drift",
}


REPORT_HEADERS: dict[str, str] = {  # the report's columns as the app's table shows them
    "prompt": "prompt", "label": "class", "count": "count", "scored": "scored", "mean_label_prob": "p(A) mean",
    "mean_generated_label_prob": "p(Î) mean", "top1_share": "top-1 share", "mean_drift": "drift mean",
    "flagged_share": "flagged share", "mean_probe_prob": "probe p mean", "probe_low_share": "probe-low share",
    "human_approved": "approved", "human_rejected": "rejected",
    "human_approval_rate": "approval rate", "scorer": "scorer", "untrained": "untrained scorer",
}


@dataclass(frozen=True)
class ReportView:
    """The prompt report as a table (``REPORT_COLUMNS`` but the scorer's name, which the note gives; numbers
    rounded; :attr:`headers` names them for people) and as bars of one metric."""

    columns: list[str]
    rows: list[list]
    bars: list[dict]  # {'prompt', 'value', 'label'}: `metric` per prompt (of one class, or all)
    metric: str
    note: str
    untrained: bool = False  # the label scores come from an untrained test scorer: say so with them

    @property
    def headers(self) -> list[str]:
        return [REPORT_HEADERS[c] for c in self.columns]


def report_view(workspace: Workspace, *, by_class: bool = False, metric: str = "mean_label_prob",
                label: str | None = None) -> ReportView:
    """``prompt_report`` for people: the table (per prompt, or per prompt and class) and the bars of
    `metric` per prompt over every class or one `label`; the note says whose scores these are."""
    if metric not in REPORT_METRICS:
        raise BadArgumentError(f"metric must be one of {', '.join(REPORT_METRICS)}, got {metric!r}.")
    label = None if label in (None, "", ALL) else label
    table = prompt_report(workspace, by_class=by_class)
    if label is None:
        plotted = prompt_report(workspace) if by_class else table
    else:
        plotted = [r for r in (table if by_class else prompt_report(workspace, by_class=True))
                   if r["label"] == label]
    bars = [{"prompt": str(r["prompt"]), "value": round(float(r[metric]), 4), "label": label or ALL}
            for r in plotted if r[metric] is not None]
    columns = [c for c in REPORT_COLUMNS if (by_class or c != "label") and c != "scorer"]  # in the note
    rows = [[(round(r[c], 3) if isinstance(r[c], float) else ("–" if r[c] is None else r[c])) for c in columns]
            for r in table]
    scorer = latest_scorer(workspace, LABEL_KIND)
    note = scorer_note(scorer).strip() if table else "No augmentations yet: run a dataset first."
    return ReportView(columns, rows, bars, metric, note, bool(scorer and scorer["is_test_model"]))
