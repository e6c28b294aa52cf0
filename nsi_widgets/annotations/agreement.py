"""Comparing authors: who labelled each neuron what, and whether they agree."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from .records import clean_author, normalize_label

__all__: list[str] = []


class AgreementMixin:
    """The agreement method of :class:`~nsi_widgets.annotations.AnnotationStore`."""

    def agreement(self, layer: str | None = None, authors: Iterable[str] | None = None):
        """Who labelled each neuron what, and whether they agree: for a teacher comparing students.

        Labels are compared with :func:`normalize_label` (case and whitespace do not matter).

        Parameters
        ----------
        layer : str, optional
            Only this layer.
        authors : iterable of str, optional
            Only these authors (default: every author in the store for the bound model).

        Returns
        -------
        pandas.DataFrame
            One row per neuron labelled by at least one of the authors, in layer and unit order:
            ``layer``, ``unit``, ``n_authors`` (how many labelled it), ``n_labels`` (distinct
            labels), ``agree`` (True when at least two authors labelled it and all gave the same
            label), ``majority`` (the most frequent label, spelled as by the alphabetically first
            author who gave it; ties between labels: alphabetical), ``majority_count``, then one
            column per author with that author's label (missing where the author gave none).
            An author column whose name clashes with a fixed column is named ``"<name> (author)"``.
        """
        import pandas as pd

        layer = self._check_layer(layer)
        wanted = None if authors is None else [clean_author(a) for a in authors]
        rows = self._current_rows(author=None, layer=layer)
        if wanted is not None:
            rows = [a for a in rows if a.author in wanted]
        author_names = wanted if wanted is not None else sorted({a.author for a in rows})
        fixed = ["layer", "unit", "n_authors", "n_labels", "agree", "majority", "majority_count"]
        author_columns = {name: (f"{name} (author)" if name in fixed else name) for name in author_names}

        by_neuron: dict[tuple[str, int], dict[str, str]] = {}
        for a in rows:  # rows are sorted by layer order and unit
            by_neuron.setdefault((a.layer, a.unit), {})[a.author] = a.label
        records = []
        for (lay, unit), labels in by_neuron.items():
            counts = Counter(normalize_label(v) for v in labels.values())
            top = max(counts.values())
            winner = sorted(k for k, n in counts.items() if n == top)[0]
            shown = next(labels[name] for name in sorted(labels) if normalize_label(labels[name]) == winner)
            record = {"layer": lay, "unit": unit, "n_authors": len(labels), "n_labels": len(counts),
                      "agree": len(labels) >= 2 and len(counts) == 1, "majority": shown, "majority_count": top}
            for name in author_names:
                record[author_columns[name]] = labels.get(name)
            records.append(record)
        frame = pd.DataFrame.from_records(records, columns=fixed + list(author_columns.values()))
        return frame.astype({"unit": "int64", "n_authors": "int64", "n_labels": "int64", "agree": "bool",
                             "majority_count": "int64"})
