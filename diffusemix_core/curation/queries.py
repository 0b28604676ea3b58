"""Curation at scale, the reading side: augmentations filtered and sorted by their scores, the rules of
``review --auto`` (and their dry run in words), and the prompt report (which prompts break which classes?). The
scores are written by ``scores.py``; the tables are described in docs/workspace.md ("Scores").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine.test_models import UNTRAINED_SCORER_NOTE
from ..errors import BadArgumentError
from ..workspace.manifest import Manifest
from .probe import PROBE_LOW, PROBE_PROB, probe_scorer
from .scores import (AUGMENTATION, FLAGS, GENERATION, HUMAN_ORIGINS, LABEL_KIND, LABEL_PROB, LABEL_RANK,
                     QUALITY_KIND, TOP_PROB, _NO_ID, latest_scorer)

if TYPE_CHECKING:
    from ..workspace.decisions import Decision
    from ..workspace.folder import Workspace

__all__ = ["AutoPlan", "AutoRules", "REPORT_COLUMNS", "SCORED_COLUMNS", "apply_auto_review", "auto_review_plan",
           "auto_review_rows", "human_verdicts", "prompt_report", "scored_augmentations", "scored_filters"]


# ------------------------------------------------------------------------------------------------ queries
SCORED_COLUMNS = (
    "id", "source_id", "generation_id", "label", "prompt", "mask", "fractal", "lam", "status", "drift",
    "label_prob", "label_rank", "top_prob", "top_class", "generated_label_prob", "generated_label_rank",
    "generated_top_class", "flags", "generated_flags", "flagged", "untrained", "probe_prob", "probe_class",
    "probe_low",
)
_ORDERS = {
    "id": "a.id",
    "drift": "a.drift IS NULL, a.drift DESC, a.id",
    "label_prob": "pa.value IS NULL, pa.value, a.id",
    "generated_label_prob": "pg.value IS NULL, pg.value, a.id",
    "probe_prob": "pp.value IS NULL, pp.value, a.id",
}


_FLAGGED = ("CASE WHEN fa.value IS NULL AND fg.value IS NULL THEN NULL "
            "ELSE coalesce(fa.value, 0) + coalesce(fg.value, 0) > 0 END")


def _scored_sql(label_id: int | None, quality_id: int | None, untrained: bool = False,
                probe_id: int | None = None) -> tuple[str, str]:
    """(the SELECT list, the FROM clause with one LEFT JOIN per score) of :func:`scored_augmentations`.

    Every join matches the whole primary key of ``scores``, so each is one index seek per row, and SQLite leaves
    out the joins a query does not use (a page's ids are found with only the joins its filters and order need).
    """
    def join(alias: str, target: str, scorer_id: int | None, metric: str) -> str:
        sid = _NO_ID if scorer_id is None else int(scorer_id)
        return (f" LEFT JOIN scores {alias} ON {alias}.target = '{target}' AND {alias}.target_id = "
                f"{'a.id' if target == AUGMENTATION else 'a.generation_id'} AND {alias}.scorer_id = {sid} "
                f"AND {alias}.metric = '{metric}'")

    columns = (
        "SELECT a.id, a.source_id, a.generation_id, a.label, a.prompt, a.mask, a.fractal, a.lam, a.status, a.drift, "
        "pa.value AS label_prob, ra.value AS label_rank, ta.value AS top_prob, ta.text AS top_class, "
        "pg.value AS generated_label_prob, rg.value AS generated_label_rank, tg.text AS generated_top_class, "
        f"fa.text AS flags, fg.text AS generated_flags, {_FLAGGED} AS flagged, {int(untrained)} AS untrained, "
        "pp.value AS probe_prob, pp.text AS probe_class, pl.value AS probe_low"
    )
    joins = (
        " FROM augmentations a"
        + join("pa", AUGMENTATION, label_id, LABEL_PROB) + join("ra", AUGMENTATION, label_id, LABEL_RANK)
        + join("ta", AUGMENTATION, label_id, TOP_PROB) + join("pg", GENERATION, label_id, LABEL_PROB)
        + join("rg", GENERATION, label_id, LABEL_RANK) + join("tg", GENERATION, label_id, TOP_PROB)
        + join("fa", AUGMENTATION, quality_id, FLAGS) + join("fg", GENERATION, quality_id, FLAGS)
        + join("pp", AUGMENTATION, probe_id, PROBE_PROB) + join("pl", AUGMENTATION, probe_id, PROBE_LOW)
    )
    return columns, joins


def scored_filters(*, label: str | None = None, prompt: str | None = None, status: str | None = None,
                   max_drift: float | None = None, min_drift: float | None = None, ids=None,
                   min_label_prob: float | None = None, max_label_prob: float | None = None,
                   flagged: bool | None = None, min_probe_prob: float | None = None,
                   probe_low: bool | None = None, in_box: tuple | None = None,
                   map_scorer: int | None = None) -> tuple[list[str], list]:
    """The WHERE clauses (to be ANDed, over the aliases of :func:`_scored_sql`) and their parameters of the filters
    that :func:`scored_augmentations` and the Curate view share. None = no filter."""
    where, params = Manifest.where(label=label, prompt=prompt, status=status, max_drift=max_drift,
                                   min_drift=min_drift, ids=ids)
    clauses = [where[len(" WHERE "):]] if where else []
    for clause, value in (("pa.value >= ?", min_label_prob), ("pa.value <= ?", max_label_prob)):
        if value is not None:
            clauses.append(clause)
            params.append(float(value))
    if flagged is not None:
        clauses.append(f"({_FLAGGED}) = ?")
        params.append(int(bool(flagged)))
    if min_probe_prob is not None:
        clauses.append("pp.value >= ?")
        params.append(float(min_probe_prob))
    if probe_low is not None:
        clauses.append("pl.value = ?")
        params.append(float(bool(probe_low)))
    if in_box is not None:  # a region of the map (embedding_map.py): x0, y0, x1, y1 in the map's coordinates
        x0, y0, x1, y1 = (float(v) for v in in_box)
        clauses.append("a.id IN (SELECT augmentation_id FROM map_points WHERE scorer_id = ? AND x BETWEEN ? AND ? "
                       "AND y BETWEEN ? AND ?)")
        params += [int(-1 if map_scorer is None else map_scorer), min(x0, x1), max(x0, x1), min(y0, y1),
                   max(y0, y1)]
    return clauses, params


def scored_augmentations(workspace: Workspace, *, scorer: str | int | None = None, label: str | None = None,
                         prompt: str | None = None, status: str | None = None, max_drift: float | None = None,
                         min_drift: float | None = None, min_label_prob: float | None = None,
                         max_label_prob: float | None = None, flagged: bool | None = None, ids=None,
                         min_probe_prob: float | None = None, probe_low: bool | None = None,
                         in_box: tuple | None = None, order: str = "id", limit: int | None = None,
                         offset: int = 0) -> list[dict]:
    """Augmentations with their scores (:data:`SCORED_COLUMNS`), filtered (all filters ANDed) and sorted.

    Scores are those of the latest label scorer (or `scorer`: a model as given to ``--scorer``, or a scorer id)
    and the latest quality flags; a score that is missing is None. ``label_prob``/``label_rank``/``top_prob``/
    ``top_class`` are A's, ``generated_*`` Î's; ``flags``/``generated_flags`` are comma-separated ('' = clean);
    ``flagged`` is 1 when A or Î has a flag (None when neither was checked); ``untrained`` is 1 when the label
    scorer is an untrained test model (say so wherever its scores are shown). `order`: ``id``, ``drift`` (highest
    first), ``label_prob`` or ``generated_label_prob`` (lowest first; unscored last). ``min_label_prob`` /
    ``max_label_prob`` filter on A's label probability (unscored rows never match).
    """
    if order not in _ORDERS:
        raise BadArgumentError(f"order must be one of {', '.join(_ORDERS)}, got {order!r}.")
    with workspace.manifest.session() as db:
        label_row = latest_scorer(workspace, LABEL_KIND, scorer, db=db)
        quality_row = latest_scorer(workspace, QUALITY_KIND, db=db)
        clauses, params = scored_filters(label=label, prompt=prompt, status=status, max_drift=max_drift,
                                         min_drift=min_drift, ids=ids, min_label_prob=min_label_prob,
                                         max_label_prob=max_label_prob, flagged=flagged,
                                         min_probe_prob=min_probe_prob, probe_low=probe_low, in_box=in_box,
                                         map_scorer=label_row and label_row["id"])
        probe_row = probe_scorer(db, label_row and label_row["id"])
        columns, joins = _scored_sql(label_row and label_row["id"], quality_row and quality_row["id"],
                                     bool(label_row and label_row["is_test_model"]), probe_row and probe_row["id"])
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        order_by = f" ORDER BY {_ORDERS[order]}"
        if limit is None:
            return list(db.query(columns + joins + where + order_by, params))
        # a page: its ids first (only the joins the filters and the order need), then its scores
        sql = (f"WITH page AS (SELECT a.id{joins}{where}{order_by} LIMIT ? OFFSET ?) "
               f"{columns}{joins} JOIN page ON page.id = a.id{order_by}")
        return list(db.query(sql, [*params, int(limit), int(offset)]))


# ------------------------------------------------------------------------------------------------ review --auto
@dataclass(frozen=True)
class AutoRules:
    """The rules of ``review --auto``: a pending augmentation that breaks one is rejected.

    ``min_label_prob``: A's label probability (of the latest label scorer, or ``scorer``) below it breaks the
    rule; ``max_drift``: drift above it; ``reject_flagged``: a quality flag on A or Î.
    """

    min_label_prob: float | None = None
    max_drift: float | None = None
    reject_flagged: bool = False
    scorer: str | int | None = None
    min_probe_prob: float | None = None  # the probe's probability of the source's label (probe.py) below it
    reject_probe_low: bool = False  # below its class's confident-learning threshold

    def check(self) -> None:
        if (self.min_label_prob is None and self.max_drift is None and not self.reject_flagged
                and self.min_probe_prob is None and not self.reject_probe_low):
            raise BadArgumentError("review --auto needs a rule: --min-label-prob P, --max-drift D, --reject-flagged, "
                                   "--min-probe-prob P and/or --reject-probe-low.")
        for name, value in (("--min-label-prob", self.min_label_prob), ("--max-drift", self.max_drift),
                            ("--min-probe-prob", self.min_probe_prob)):
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise BadArgumentError(f"{name} must be in [0, 1], got {value}.")


@dataclass
class AutoPlan:
    """What ``review --auto`` changes (or would, in a dry run): the pending augmentations each rule rejects."""

    rules: AutoRules
    scorer: dict | None  # the label scorer row used (None when no rule needs one)
    quality_scorer: dict | None
    pending: int  # pending augmentations in scope
    reject: list[dict] = field(default_factory=list)  # scored rows, each with 'broken': the rules it breaks
    unscored: int = 0  # pending ones a rule could not judge (a score missing) and no other rule rejects

    @property
    def ids(self) -> list[int]:
        return [row["id"] for row in self.reject]

    def by_rule(self) -> dict[str, int]:
        """How many rows break each rule given (a row may break several)."""
        out = {rule: 0 for rule in self.rule_names()}
        for row in self.reject:
            for rule in row["broken"]:
                out[rule] += 1
        return out

    def rule_names(self) -> list[str]:
        r = self.rules
        return [name for name, on in (("reject_flagged", r.reject_flagged),
                                      ("min_label_prob", r.min_label_prob is not None),
                                      ("max_drift", r.max_drift is not None),
                                      ("min_probe_prob", r.min_probe_prob is not None),
                                      ("reject_probe_low", r.reject_probe_low)) if on]

    def counts(self, by: str) -> dict[str, int]:
        """Rejections per ``label`` or per ``prompt``, sorted by name."""
        out: dict[str, int] = {}
        for row in self.reject:
            key = str(row[by])
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items()))

    def note(self) -> dict:
        """What the decision records (``review_batches.filters`` -> ``note``): the rules and, per rule, the ids."""
        rules: dict[str, Any] = {}
        if self.rules.reject_flagged:
            rules["reject_flagged"] = True
            rules["quality_scorer"] = self.quality_scorer and self.quality_scorer["id"]
        if self.rules.min_label_prob is not None:
            rules["min_label_prob"] = float(self.rules.min_label_prob)
            rules["scorer"] = self.scorer and {"id": self.scorer["id"], "model": self.scorer["model"]}
        if self.rules.max_drift is not None:
            rules["max_drift"] = float(self.rules.max_drift)
        if self.rules.min_probe_prob is not None:
            rules["min_probe_prob"] = float(self.rules.min_probe_prob)
        if self.rules.reject_probe_low:
            rules["reject_probe_low"] = True
        broken = {rule: [row["id"] for row in self.reject if rule in row["broken"]] for rule in self.rule_names()}
        return {"rule": rules, "broken": broken}


def auto_review_plan(workspace: Workspace, rules: AutoRules, *, label: str | None = None,
                     prompt: str | None = None, ids=None) -> AutoPlan:
    """Which pending augmentations (optionally only of `label`, `prompt`, `ids`) the rules reject; changes
    nothing. Decisions made before (by people or rules) are never touched: only pending items are judged."""
    rules.check()
    scorer = latest_scorer(workspace, LABEL_KIND, rules.scorer)
    quality_row = latest_scorer(workspace, QUALITY_KIND)
    if rules.min_label_prob is not None and scorer is None:
        raise BadArgumentError(f"--min-label-prob needs label scores and '{workspace.path}' has none; run "
                               f"`python -m diffusemix_core score --workspace {workspace.path}` first.")
    if (rules.min_probe_prob is not None or rules.reject_probe_low) and (
            scorer is None or _probe_of(workspace, scorer) is None):
        raise BadArgumentError(f"--min-probe-prob / --reject-probe-low need the probe's scores and '{workspace.path}'"
                               f" has none; run `python -m diffusemix_core score --workspace {workspace.path}` "
                               "(the probe needs two classes with two labelled images each).")
    if rules.reject_flagged and quality_row is None:
        raise BadArgumentError(f"--reject-flagged needs quality flags and '{workspace.path}' has none; run "
                               f"`python -m diffusemix_core score --workspace {workspace.path}` first.")
    rows = scored_augmentations(workspace, scorer=None if scorer is None else scorer["id"], label=label,
                                prompt=prompt, ids=ids, status="pending")
    plan = AutoPlan(rules=rules, scorer=scorer if rules.min_label_prob is not None else None,
                    quality_scorer=quality_row if rules.reject_flagged else None, pending=len(rows))
    for row in rows:
        broken, unknown = [], False
        if rules.reject_flagged:
            unknown |= row["flagged"] is None
            if row["flagged"]:
                broken.append("reject_flagged")
        if rules.min_label_prob is not None:
            unknown |= row["label_prob"] is None
            if row["label_prob"] is not None and row["label_prob"] < rules.min_label_prob:
                broken.append("min_label_prob")
        if rules.max_drift is not None:
            unknown |= row["drift"] is None
            if row["drift"] is not None and row["drift"] > rules.max_drift:
                broken.append("max_drift")
        if rules.min_probe_prob is not None:
            unknown |= row["probe_prob"] is None
            if row["probe_prob"] is not None and row["probe_prob"] < rules.min_probe_prob:
                broken.append("min_probe_prob")
        if rules.reject_probe_low:
            unknown |= row["probe_low"] is None
            if row["probe_low"]:
                broken.append("reject_probe_low")
        if broken:
            plan.reject.append(dict(row, broken=broken))
        elif unknown:
            plan.unscored += 1
    return plan


def _probe_of(workspace: Workspace, label_row: dict) -> dict | None:
    with workspace.manifest.session() as db:
        return probe_scorer(db, label_row["id"])


def apply_auto_review(workspace: Workspace, plan: AutoPlan) -> Decision | None:
    """Reject what `plan` found, as ONE decision with origin ``auto`` and the rules as its note (one undo reverts
    it); only items still pending change. None when the plan rejects nothing."""
    if not plan.reject:
        return None
    return workspace.review("rejected", origin="auto", ids=plan.ids, current_status="pending", note=plan.note())


def auto_review_rows(plan: AutoPlan) -> tuple[str, list[list]]:
    """The dry run of ``review --auto`` in words and as [by, name, would reject] rows (per rule, label, prompt)."""
    n = len(plan.reject)
    text = (f"Would reject {n:,} of {plan.pending:,} pending augmentation(s)"
            + (f"; {plan.unscored:,} could not be judged (a score is missing) and stay pending" if plan.unscored
               else "") + ". Nothing changes until you apply.")
    if plan.scorer is not None and plan.scorer.get("is_test_model"):
        text += f" ⚠️ *{UNTRAINED_SCORER_NOTE}.*"
    rows = [["rule", name, count] for name, count in plan.by_rule().items()]
    rows += [["label", name, count] for name, count in plan.counts("label").items()]
    rows += [["prompt", name, count] for name, count in plan.counts("prompt").items()]
    return text, rows


# ------------------------------------------------------------------------------------------------ the report
REPORT_COLUMNS = (
    "prompt", "label", "count", "scored", "mean_label_prob", "mean_generated_label_prob", "top1_share",
    "mean_drift", "flagged_share", "mean_probe_prob", "probe_low_share", "human_approved", "human_rejected",
    "human_approval_rate", "scorer", "untrained",
)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _share(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(bool(v) for v in values) / len(values) if values else None


def human_verdicts(workspace: Workspace) -> dict[int, str]:
    """``{augmentation id: 'approved' | 'rejected'}`` where the latest decision a person made on it (origin app,
    cli or api; an undo counts as that person's decision) is an approval or a rejection."""
    marks = ",".join("?" * len(HUMAN_ORIGINS))
    with workspace.manifest.session() as db:
        return dict(db.execute(
            f"SELECT augmentation_id, status FROM reviews WHERE id IN (SELECT max(id) FROM reviews WHERE origin IN "
            f"({marks}) GROUP BY augmentation_id) AND status IN ('approved', 'rejected')", HUMAN_ORIGINS).fetchall())


def prompt_report(workspace: Workspace, by_class: bool = False, *, scorer: str | int | None = None) -> list[dict]:
    """One row per prompt (per prompt and label with `by_class`), sorted by prompt then label; columns
    :data:`REPORT_COLUMNS`:

    ``count`` augmentations, ``scored`` of them with A's label probability; ``mean_label_prob`` (A) and
    ``mean_generated_label_prob`` (Î): the mean probability of the true class; ``top1_share``: the share of scored
    A whose true class is CLIP's top choice; ``mean_drift``; ``flagged_share``: the share of A with a quality flag
    on A or Î (of those checked); ``human_approved`` / ``human_rejected`` and ``human_approval_rate`` =
    approved / (approved + rejected) over the latest decision people made (rules' decisions are not counted);
    ``scorer``: the label scorer's model, ``untrained``: True for a test scorer (its scores mean nothing). Means and
    shares are None where nothing was measured. ``label`` is None without `by_class`.
    """
    label_row = latest_scorer(workspace, LABEL_KIND, scorer)
    rows = scored_augmentations(workspace, scorer=None if label_row is None else label_row["id"])
    verdicts = human_verdicts(workspace)
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["prompt"], row["label"] if by_class else None), []).append(row)
    out = []
    for (prompt, label), members in sorted(groups.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        ranks = [r["label_rank"] for r in members if r["label_rank"] is not None]
        checked = [r["flagged"] for r in members if r["flagged"] is not None]
        approved = sum(verdicts.get(r["id"]) == "approved" for r in members)
        rejected = sum(verdicts.get(r["id"]) == "rejected" for r in members)
        out.append({
            "prompt": prompt, "label": label, "count": len(members),
            "scored": sum(r["label_prob"] is not None for r in members),
            "mean_label_prob": _mean([r["label_prob"] for r in members]),
            "mean_generated_label_prob": _mean([r["generated_label_prob"] for r in members]),
            "top1_share": (sum(rank == 1 for rank in ranks) / len(ranks)) if ranks else None,
            "mean_drift": _mean([r["drift"] for r in members]),
            "flagged_share": (sum(bool(f) for f in checked) / len(checked)) if checked else None,
            "mean_probe_prob": _mean([r["probe_prob"] for r in members]),
            "probe_low_share": _share([r["probe_low"] for r in members]),
            "human_approved": approved, "human_rejected": rejected,
            "human_approval_rate": approved / (approved + rejected) if approved + rejected else None,
            "scorer": None if label_row is None else label_row["model"],
            "untrained": bool(label_row and label_row["is_test_model"]),
        })
    return out

