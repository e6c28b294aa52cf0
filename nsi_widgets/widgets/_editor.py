"""The card's annotation editor on the Python side: writes, undo, redo and history on the store.

The store (:class:`~nsi_widgets.annotations.AnnotationStore`) keeps every change and has undo;
redo is kept here, per (layer, unit, author): an undo remembers what it replaced, a redo writes it
back as a new version, and any other write forgets the redo steps of that neuron. A store-like
object with only ``annotate``/``get``/``all`` works too (no undo, redo or history then).
"""
from __future__ import annotations

import re
from typing import Any

from . import _data

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_author(author: Any) -> str:
    """An author name as the store accepts it: one non-empty line, not ``"*"``."""
    if not isinstance(author, str):
        raise _data.WidgetArgumentError(f"author must be a str, got {type(author).__name__}")
    name = author.strip()
    if not name or name == "*" or _CONTROL.search(name):
        raise _data.WidgetArgumentError(f"author must be a non-empty single-line name other than '*', got {author!r}")
    return name


def clean_tags(tags) -> tuple[str, ...]:
    """Tags from a list or a comma-separated string, stripped, empty ones dropped."""
    if isinstance(tags, str):
        tags = tags.split(",")
    return tuple(str(tag).strip() for tag in (tags or ()) if str(tag).strip())


class AnnotationEditor:
    """Annotate, undo, redo and read history of neurons in one store, as one author or another."""

    def __init__(self, store):
        self.store = store
        self._redo: dict[tuple[str, int, str], list[tuple | None]] = {}

    # -- what the store can do -------------------------------------------------------------------
    @property
    def default_author(self) -> str:
        return str(getattr(self.store, "author", "") or "")

    @property
    def can_history(self) -> bool:
        return callable(getattr(self.store, "history", None))

    @property
    def can_undo_at_all(self) -> bool:
        return callable(getattr(self.store, "undo", None))

    @property
    def read_only(self) -> bool:
        return bool(getattr(self.store, "read_only", False))

    def _kw(self, author: str) -> dict:
        # stand-in stores without authors take no author argument
        return {} if author == self.default_author else {"author": author}

    # -- reads -------------------------------------------------------------------------------------
    def get(self, layer: str, unit: int, author: str):
        return self.store.get(layer, int(unit), **self._kw(author))

    def tables(self, layers, author: str) -> dict[str, dict[str, dict]]:
        rows = self.store.all(**self._kw(author))
        out: dict[str, dict[str, dict]] = {layer: {} for layer in layers}
        for key, annotation in rows.items():
            if key[0] in out:
                out[key[0]][str(int(key[1]))] = _data.annotation_dict(annotation, full=True)
        return out

    def authors(self, current: str) -> list[str]:
        names = set(self.store.authors()) if callable(getattr(self.store, "authors", None)) else set()
        names.update(n for n in (self.default_author, current) if n)
        return sorted(names)

    def history(self, layer: str, unit: int) -> list[dict]:
        """Every change of the neuron by every author, newest first."""
        if not self.can_history:
            return []
        rows = self.store.history(layer, int(unit), author="*")
        return [{"revision": a.revision, "action": a.action, "author": a.author, "label": a.label,
                 "note": a.note, "tags": list(a.tags), "removed": bool(a.removed),
                 "time": _data.format_time(a.time)} for a in reversed(rows)]

    def can_undo(self, layer: str, unit: int, author: str) -> bool:
        if not (self.can_undo_at_all and self.can_history):
            return False
        rows = self.store.history(layer, int(unit), author=author)
        if not rows:
            return False
        last = rows[-1]
        return not (last.removed and last.undo_to is None)

    def state(self, layer: str, unit: int, author: str) -> dict:
        """The editor's view of one neuron: annotation, history and whether undo/redo apply."""
        return {"layer": layer, "unit": int(unit), "author": author,
                "annotation": _data.annotation_dict(self.get(layer, unit, author), full=True) or None,
                "history": self.history(layer, unit),
                "can_undo": self.can_undo(layer, unit, author),
                "can_redo": bool(self._redo.get((layer, int(unit), author)))}

    # -- writes ------------------------------------------------------------------------------------
    def _write(self, layer: str, unit: int, content: tuple | None, author: str) -> None:
        """Make ``content`` = (label, note, tags) current, or remove the annotation (None)."""
        if content is None:
            if self.get(layer, unit, author) is not None:
                self.store.remove(layer, int(unit), **self._kw(author))
            return
        label, note, tags = content
        self.store.annotate(layer, int(unit), label, note=note, tags=tags, **self._kw(author))

    def annotate(self, layer: str, unit: int, label: str, note: str, tags, author: str) -> None:
        """Save what the editor holds; all fields empty removes the annotation."""
        if not isinstance(label, str) or not isinstance(note, str):
            raise _data.WidgetArgumentError("label and note must be strings")
        tags = clean_tags(tags)
        empty = not label.strip() and not note.strip() and not tags
        self._write(layer, unit, None if empty else (label.strip(), note, tags), author)
        self._redo.pop((layer, int(unit), author), None)

    def undo(self, layer: str, unit: int, author: str) -> None:
        if not self.can_undo(layer, unit, author):
            raise _data.WidgetArgumentError(f"nothing to undo for {layer} unit {unit} by {author!r}")
        before = self.get(layer, unit, author)
        self.store.undo(layer, int(unit), **self._kw(author))
        self._redo.setdefault((layer, int(unit), author), []).append(
            None if before is None else (before.label, before.note, tuple(before.tags)))

    def redo(self, layer: str, unit: int, author: str) -> None:
        steps = self._redo.get((layer, int(unit), author))
        if not steps:
            raise _data.WidgetArgumentError(f"nothing to redo for {layer} unit {unit} by {author!r}")
        content = steps.pop()
        self._write(layer, unit, content, author)
