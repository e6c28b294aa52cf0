"""Annotation records, and the cleaning of every field a user or a file gives.

Every value that reaches the store's file passes one of the ``clean_*`` functions here: text is
valid Unicode without control characters where one line is expected, units are integers SQLite
can hold, times are UTC ISO-8601. A bad value is an :class:`~nsi_widgets.core.errors.InputError`
(a ``ValueError``) or :class:`~nsi_widgets.core.errors.InputTypeError` (a ``TypeError``) that
says what is wrong, raised before anything is written.
"""
from __future__ import annotations

import getpass
import json
import operator
import re
import reprlib
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..core.errors import InputError, InputTypeError

__all__ = ["ALL_AUTHORS", "Annotation", "Conflict", "ImportReport", "normalize_label"]

#: Pass as ``author`` to the read methods to see every author's annotations.
ALL_AUTHORS = "*"
#: The largest unit index: SQLite integers are signed 64-bit.
MAX_UNIT = 2**63 - 1

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlevel = 3


def shown(value: Any) -> str:
    """``repr(value)`` cut short for a message (a value read from a file may be huge or deeply nested)."""
    return _SHORT.repr(value)


@dataclass(frozen=True)
class Annotation:
    """One version of a neuron's annotation (one row of the history).

    Attributes
    ----------
    layer : str
        Layer name.
    unit : int
        Unit (channel) index in the layer.
    label : str
        The name given to the neuron; ``""`` for a removal.
    note : str
        Free text.
    tags : tuple of str
        Tags, in the order given, without duplicates.
    author : str
        Who wrote it.
    time : str
        When, as UTC ISO-8601 (``"2025-01-31T12:00:00.000000+00:00"``).
    model : str
        Fingerprint of the model annotated (``""`` when unbound).
    revision : int or None
        The history row's id; grows with every change. ``None`` for a record not (yet) stored,
        such as the incoming side of an import conflict.
    action : str
        ``"set"``, ``"remove"``, ``"undo"``, ``"import"`` or ``"merge"``.
    removed : bool
        True if, after this change, the neuron has no annotation by this author.
    """

    layer: str
    unit: int
    label: str
    note: str = ""
    tags: tuple[str, ...] = ()
    author: str = ""
    time: str = ""
    model: str = ""
    revision: int | None = None
    action: str = "set"
    removed: bool = False
    # The history row whose state this one replaced in the undo sense (internal bookkeeping).
    undo_to: int | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, int]:
        """``(layer, unit)``."""
        return (self.layer, self.unit)

    def same_content(self, other: "Annotation") -> bool:
        """True if label, note and tags are equal (what an import compares)."""
        return (self.label, self.note, self.tags) == (other.label, other.note, other.tags)

    def to_dict(self) -> dict[str, Any]:
        """The public fields as a JSON-ready dict (tags as a list)."""
        d = asdict(self)
        d.pop("undo_to")
        d["tags"] = list(self.tags)
        return d


@dataclass(frozen=True)
class Conflict:
    """An imported record whose key has a different current annotation in the store.

    Attributes
    ----------
    ours : Annotation
        The store's current annotation.
    theirs : Annotation
        The incoming record.
    resolution : str
        ``"unresolved"`` (``on_conflict="report"``: ours kept, theirs not written),
        ``"ours"`` (ours kept) or ``"theirs"`` (theirs written as the new current version;
        ours stays in the history).
    """

    ours: Annotation
    theirs: Annotation
    resolution: str

    @property
    def key(self) -> tuple[str, str, int, str]:
        """``(model, layer, unit, author)``."""
        return (self.ours.model, self.ours.layer, self.ours.unit, self.ours.author)


@dataclass
class ImportReport:
    """What an import or merge did.

    Attributes
    ----------
    source : str
        The file or store read.
    on_conflict : str
        The policy used.
    added : list of Annotation
        Records written for keys that had no current annotation.
    updated : list of Annotation
        Records written over a different current annotation (``on_conflict="theirs"``).
    unchanged : int
        Records equal to the current annotation (nothing written).
    conflicts : list of Conflict
        Every key whose current annotation differed from the incoming record.
    other_models : dict of str to int
        Records kept under a model fingerprint other than the store's (not visible through
        this store object; see :meth:`AnnotationStore.models`).
    """

    source: str
    on_conflict: str
    added: list[Annotation] = field(default_factory=list)
    updated: list[Annotation] = field(default_factory=list)
    unchanged: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    other_models: dict[str, int] = field(default_factory=dict)

    @property
    def unresolved(self) -> list[Conflict]:
        """Conflicts left for the user (``on_conflict="report"``)."""
        return [c for c in self.conflicts if c.resolution == "unresolved"]

    def summary(self) -> str:
        """One line per fact, for printing in a notebook."""
        lines = [f"import from {self.source}: {len(self.added)} added, {len(self.updated)} updated, "
                 f"{self.unchanged} unchanged, {len(self.conflicts)} conflicts (on_conflict={self.on_conflict!r})"]
        for c in self.conflicts:
            lines.append(f"  conflict {c.ours.layer}[{c.ours.unit}] by {c.ours.author!r}: ours {c.ours.label!r}, "
                         f"theirs {c.theirs.label!r} -> {c.resolution}")
        for model, n in self.other_models.items():
            lines.append(f"  {n} records kept under other model fingerprint {model!r}")
        if self.unresolved:
            lines.append("  re-run with on_conflict='theirs' or 'ours' to settle the conflicts")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


# Text and field cleaning -------------------------------------------------------------------------
def normalize_label(label: str) -> str:
    """The form in which labels are compared: NFKC, case-folded, whitespace runs collapsed.

    ``"Dog  Face"`` and ``" dog face"`` are the same label; ``"dog-face"`` is not.
    """
    return " ".join(unicodedata.normalize("NFKC", label).casefold().split())


def _text(value: Any, name: str) -> str:
    """``value`` as a str that SQLite can store (valid Unicode: no lone surrogates)."""
    if not isinstance(value, str):
        raise InputTypeError(f"{name} must be a str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{name} is not valid Unicode text (a lone surrogate {value[exc.start]!r} at "
                         f"character {exc.start}); it cannot be stored") from None
    return value


def clean_label(label: Any) -> str:
    label = _text(label, "label").strip()
    if not label:
        raise InputError("label must not be empty; to delete an annotation use store.remove(layer, unit)")
    if _CONTROL.search(label):
        raise InputError(f"label must be one line of text without control characters: {shown(label)}")
    return label


def clean_note(note: Any) -> str:
    if note is None:
        return ""
    note = _text(note, "note")
    if "\x00" in note:
        raise InputError("note must not contain NUL characters")
    return note


def clean_tags(tags: Any) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str):
        raise InputTypeError(f"tags must be a list of str, not a single str; write tags=[{shown(tags)}]")
    try:
        items = list(tags)
    except TypeError:
        raise InputTypeError(f"tags must be a list of str, not {type(tags).__name__}") from None
    cleaned: dict[str, None] = {}  # ordered, and membership without a scan of the list
    for tag in items:
        if not isinstance(tag, str):
            raise InputTypeError(f"each tag must be a str, got {type(tag).__name__} ({shown(tag)})")
        tag = _text(tag, "a tag").strip()
        if not tag or _CONTROL.search(tag):
            raise InputError(f"tags must be non-empty single-line text, got {shown(tag)}")
        cleaned.setdefault(tag)
    return tuple(cleaned)


def clean_author(author: Any) -> str:
    author = _text(author, "author").strip()
    if not author or author == ALL_AUTHORS or _CONTROL.search(author):
        raise InputError(f"author must be a non-empty single-line name other than {ALL_AUTHORS!r}, "
                         f"got {shown(author)}")
    return author


def clean_layer(layer: Any) -> str:
    if not isinstance(layer, str):
        raise InputTypeError(f"layer must be a str (the layer's name), not {type(layer).__name__}")
    layer = _text(layer, "layer")
    if not layer.strip() or _CONTROL.search(layer):
        raise InputError(f"layer must be a non-empty single-line name, got {shown(layer)}")
    return layer


def clean_unit(unit: Any) -> int:
    if isinstance(unit, bool):
        raise InputTypeError("unit must be an int, not bool")
    try:
        unit = operator.index(unit)
    except TypeError:
        raise InputTypeError(f"unit must be an int, not {type(unit).__name__} ({shown(unit)})") from None
    if unit < 0:
        raise InputError(f"unit must be >= 0, got {unit}")
    if unit > MAX_UNIT:
        raise InputError(f"unit {unit} is too large: units are channel indices, at most 2**63 - 1")
    return unit


def clean_model(model: Any) -> str:
    return _text(model, "model (the fingerprint)")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def clean_time(value: Any) -> str:
    """Parse an ISO-8601 time (``Z`` or an offset; naive means UTC) into the stored UTC form."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return utc_now()
    if not isinstance(value, str):
        raise InputTypeError(f"time must be an ISO-8601 str, not {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc).isoformat(timespec="microseconds")
    except (ValueError, OverflowError):  # not ISO-8601, or out of range once moved to UTC
        raise InputError(f"time {shown(value)} is not an ISO-8601 time (e.g. 2025-01-31T12:00:00+00:00)") from None


def default_author() -> str:
    try:
        name = getpass.getuser()
    except Exception:  # no user name in the environment or the password database (containers)
        name = ""
    name = (name or "").strip()
    return name if name and name != ALL_AUTHORS and not _CONTROL.search(name) else "unknown"


# Records read from files -------------------------------------------------------------------------
def record_from_fields(fields: Mapping[str, Any], *, model: str, author: str, from_csv: bool) -> Annotation:
    """An :class:`Annotation` from an imported record (a CSV row's cells or a JSON object).

    ``model`` and ``author`` are used where the record leaves them out or empty. CSV cells are
    text: ``unit`` must be digits and ``tags`` a JSON list or ``;``-separated; in JSON, ``unit``
    is an integer and ``tags`` a list.
    """
    def given(name: str) -> Any:
        value = fields.get(name)
        return None if value is None or value == "" else value

    unit = fields.get("unit")
    tags: Any = fields.get("tags")
    if from_csv:
        if not isinstance(unit, str) or not re.fullmatch(r"\s*\d+\s*", unit):
            raise InputError(f"unit must be a non-negative integer, got {shown(unit)}")
        unit = int(unit)
        tags = parse_tags_cell(tags or "")
    record_model = given("model")  # empty: annotations made unbound, adopted by this store's model
    record_author = given("author")
    return Annotation(layer=clean_layer(fields.get("layer")), unit=clean_unit(unit),
                      label=clean_label(fields.get("label")), note=clean_note(given("note")),
                      tags=clean_tags(tags), author=author if record_author is None else clean_author(record_author),
                      time=clean_time(given("time")), model=model if record_model is None else clean_model(record_model))


def parse_tags_cell(cell: str) -> list[str]:
    """A CSV tags cell: a JSON list as exported, or ``;``-separated text typed by hand."""
    cell = cell.strip()
    if not cell:
        return []
    if cell.startswith("["):
        try:
            value = json.loads(cell)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, list):
            return value
    return [t for t in (part.strip() for part in cell.split(";")) if t]


class Problems:
    """What is wrong with an import's records: every problem counted, the first few kept for the message."""

    SHOWN = 10

    def __init__(self) -> None:
        self.count = 0
        self.messages: list[str] = []

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < self.SHOWN:
            self.messages.append(message)

    def __bool__(self) -> bool:
        return self.count > 0

    def error(self, source: str) -> InputError:
        """One error listing the problems (one per line, the first :attr:`SHOWN`)."""
        more = self.count - len(self.messages)
        shown = "\n  ".join(self.messages) + (f"\n  ... and {more} more" if more else "")
        return InputError(f"cannot import {source}; nothing was written ({self.count} problem"
                          f"{'s' if self.count != 1 else ''}):\n  {shown}")
