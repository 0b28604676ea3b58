"""The augmentations a person picked in the Curate view: a value with explicit add, remove, toggle and clear.

Viewing an item never changes it; every change returns a new :class:`Selection`. The counted decision plans
(``decision_plans.py``) act on it, and a page marks what it holds (``page.py``, ``previews.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Selection"]


@dataclass(frozen=True)
class Selection:
    """The augmentation ids a person picked: a value; every change returns a new selection."""

    ids: frozenset[int] = frozenset()

    def add(self, *ids: int) -> Selection:
        return Selection(self.ids | {int(i) for i in ids})

    def remove(self, *ids: int) -> Selection:
        return Selection(self.ids - {int(i) for i in ids})

    def toggle(self, aug_id: int) -> Selection:
        return self.remove(aug_id) if int(aug_id) in self.ids else self.add(aug_id)

    def clear(self) -> Selection:
        return Selection()

    def __contains__(self, aug_id: object) -> bool:
        return isinstance(aug_id, int) and aug_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        return iter(sorted(self.ids))

    def describe(self, limit: int = 12) -> str:
        """'3 selected: #4, #7, #9' (or 'Nothing selected.')."""
        if not self.ids:
            return "Nothing selected."
        ids = sorted(self.ids)
        shown = ", ".join(f"#{i}" for i in ids[:limit]) + (f", … {len(ids) - limit} more" if len(ids) > limit else "")
        return f"{len(ids)} selected: {shown}."
