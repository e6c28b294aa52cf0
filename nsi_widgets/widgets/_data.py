"""Pure helpers behind the widgets: argument checks, display order, thumbnails, binary payloads.

Nothing here touches a model or a widget; every function maps arrays of a
:class:`~nsi_widgets.results.LayerIndex` to what the browser receives, so the
widgets, the static HTML export and the tests share one implementation.
"""
from __future__ import annotations

import datetime as _dt
import difflib
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# The engine's own definition (pure NumPy; no model is run).
from ..index.selectivity import class_frequencies as _class_frequencies
from traitlets import TraitError

SORT_UNIT = "unit"
TOP_ACTIVATION = "top_activation"
SHOW_CHOICES = ("all", "alive", "dead")
#: grid thumbnails are this many pixels square unless asked otherwise (32*32 RGB PNG <= 3.1 KB)
DEFAULT_THUMB = 32
#: indexes drawn as mini bars under each grid thumbnail
MAX_BARS = 4


class WidgetArgumentError(TraitError, ValueError):
    """An argument or trait value the widgets cannot use; the message lists the valid ones.

    Subclasses both :class:`ValueError` (for callers) and :class:`traitlets.TraitError` (so a
    rejected trait assignment rolls back like any other trait validation error).
    """


def choice_error(what: str, value: Any, valid: Sequence[Any]) -> WidgetArgumentError:
    """Build the error for an unknown choice, with a close match and the list of valid ones."""
    names = [str(v) for v in valid]
    close = difflib.get_close_matches(str(value), names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(repr(v) for v in valid) if valid else "none"
    return WidgetArgumentError(f"unknown {what} {value!r}.{hint} Valid {what}s: {listing}")


def check_layer(idx, layer: str | None) -> str:
    """Return ``layer`` (default: the first indexed layer) or raise listing the indexed layers."""
    layers = list(idx.layers)
    if not layers:
        raise WidgetArgumentError("this NeuronIndex has no layers; index at least one layer first")
    if layer is None:
        return layers[0]
    if layer not in layers:
        raise choice_error("layer", layer, layers)
    return layer


def check_unit(n_units: int, unit: Any, layer: str) -> int:
    """Return ``unit`` as an int in ``[0, n_units)`` or raise naming the valid range."""
    if isinstance(unit, (bool, np.bool_)) or not isinstance(unit, (int, np.integer)):
        raise WidgetArgumentError(f"unit must be an integer unit id, got {unit!r}")
    if not 0 <= int(unit) < n_units:
        raise WidgetArgumentError(
            f"unit {int(unit)} is out of range for layer {layer!r}: valid units are 0..{n_units - 1}")
    return int(unit)


# ---------------------------------------------------------------------------------------------
# Scores, order and filters (the JS front end implements the same rules in js/src/order.js)
# ---------------------------------------------------------------------------------------------
def layer_scores(L) -> dict[str, np.ndarray]:
    """Per-unit values the grid can sort and filter by: every index in ``L.scores`` plus
    ``top_activation`` (``a_1``), each a float32 ``(C,)`` array."""
    C = L.n_units
    scores: dict[str, np.ndarray] = {}
    for name, values in L.scores.items():
        v = np.asarray(values, dtype=np.float32).reshape(-1)
        if v.shape != (C,):
            raise ValueError(f"score {name!r} of layer {L.name!r} has shape {np.shape(values)}, "
                             f"expected ({C},): one value per unit")
        scores[str(name)] = v
    if TOP_ACTIVATION not in scores:
        top = L.top_activations[:, 0] if L.top_n else np.full(C, np.nan)
        scores[TOP_ACTIVATION] = np.asarray(top, dtype=np.float32)
    return scores


def sort_keys(score_names: Sequence[str]) -> list[str]:
    """Valid ``sort_by`` values: ``"unit"`` and every score name."""
    return [SORT_UNIT] + [n for n in score_names if n != SORT_UNIT]


def annotation_text(annotation: Mapping | None) -> str:
    """Lower-cased text searched by the grid: label, note and tags joined by spaces."""
    if not annotation:
        return ""
    parts = [str(annotation.get("label") or ""), str(annotation.get("note") or "")]
    parts += [str(t) for t in (annotation.get("tags") or ())]
    return " ".join(parts).lower()


def normalize_filters(filters: Mapping | None, score_names: Sequence[str]) -> dict[str, list]:
    """Validate ``{score: (lo, hi)}`` range filters (either end may be ``None``) into JSON lists."""
    out: dict[str, list] = {}
    for key, bounds in dict(filters or {}).items():
        if key not in score_names:
            raise choice_error("filter key", key, list(score_names))
        if bounds is None:
            continue
        try:
            lo, hi = bounds
        except (TypeError, ValueError):
            raise WidgetArgumentError(
                f"filter {key!r} must be a (min, max) pair (None for an open end), got {bounds!r}") from None
        lo = None if lo is None else float(lo)
        hi = None if hi is None else float(hi)
        if (lo is not None and math.isnan(lo)) or (hi is not None and math.isnan(hi)):
            raise WidgetArgumentError(f"filter {key!r} bounds must not be NaN, got {bounds!r}")
        if lo is not None and hi is not None and lo > hi:
            raise WidgetArgumentError(f"filter {key!r} has min {lo} > max {hi}")
        if lo is None and hi is None:
            continue
        out[str(key)] = [lo, hi]
    return out


def display_order(scores: Mapping[str, np.ndarray], dead: np.ndarray, sort_by: str = SORT_UNIT,
                  descending: bool = False, filters: Mapping | None = None, show: str = "all",
                  search: str = "", texts: Mapping[int, str] | None = None,
                  unlabelled_only: bool = False) -> np.ndarray:
    """Unit ids in display order: filtered, then sorted.

    Rules (the front end applies the same ones, js/src/order.js):

    * ``show`` keeps ``"all"``, only ``"alive"`` or only ``"dead"`` units;
    * a range filter ``[lo, hi]`` keeps finite values with ``lo <= v <= hi`` (NaN fails);
    * ``search``: every whitespace-separated term must occur in the unit's annotation text;
    * ``unlabelled_only`` keeps the units without an annotation (no key in ``texts``);
    * ``sort_by="unit"`` orders by id (reversed when descending); any score sorts the alive
      units with a finite value by that value (ties: smaller id first) and puts the rest
      (NaN or dead) last, by id, in either direction.

    Returns
    -------
    ndarray of int64
    """
    dead = np.asarray(dead, dtype=bool)
    keep = np.ones(dead.shape[0], dtype=bool)
    if show == "alive":
        keep &= ~dead
    elif show == "dead":
        keep &= dead
    elif show != "all":
        raise choice_error("show option", show, SHOW_CHOICES)
    for key, (lo, hi) in (filters or {}).items():
        # float64: compare exactly like the browser does (JS numbers), not in float32
        v = np.asarray(scores[key], dtype=np.float64)
        ok = np.isfinite(v)
        if lo is not None:
            ok &= v >= lo
        if hi is not None:
            ok &= v <= hi
        keep &= ok
    texts = texts or {}
    if unlabelled_only:
        for unit in texts:
            if 0 <= int(unit) < keep.shape[0]:
                keep[int(unit)] = False
    terms = str(search or "").lower().split()
    if terms:
        for unit in np.flatnonzero(keep):
            text = texts.get(int(unit), "")
            if not all(term in text for term in terms):
                keep[unit] = False
    units = np.flatnonzero(keep).astype(np.int64)
    if sort_by == SORT_UNIT:
        return units[::-1].copy() if descending else units
    values = np.asarray(scores[sort_by])[units]
    valid = np.isfinite(values) & ~dead[units]
    ranked, v = units[valid], values[valid]
    # stable argsort keeps ascending ids among ties in both directions; negation is exact
    ranked = ranked[np.argsort(-v if descending else v, kind="stable")]
    return np.concatenate([ranked, units[~valid]])


# ---------------------------------------------------------------------------------------------
# Images and binary encoding
# ---------------------------------------------------------------------------------------------
def box_resize(images: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize a batch ``(B, H, W, ch)`` to ``(B, out_h, out_w, ch)``.

    Downscaling averages whole input pixels per output pixel (box filter); upscaling repeats
    pixels (nearest), which keeps tiny receptive fields crisp.
    """
    images = np.asarray(images, dtype=np.float32)
    for axis, out in ((1, out_h), (2, out_w)):
        size = images.shape[axis]
        if size == out:
            continue
        starts = (np.arange(out) * size) // out
        counts = np.maximum(np.diff(np.append(starts, size)), 1).astype(np.float32)
        images = np.add.reduceat(images, starts, axis=axis)
        shape = [1] * images.ndim
        shape[axis] = out
        images = images / counts.reshape(shape)
    return images


def fit_size(h: int, w: int, max_side: int) -> tuple[int, int]:
    """``(h, w)`` scaled down (never up) so that the longer side is at most ``max_side``."""
    scale = min(1.0, max_side / max(h, w, 1))
    return max(1, round(h * scale)), max(1, round(w * scale))


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float RGB in ``[0, 1]`` (NaN as black) to uint8; uint8 input passes through."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    x = images.astype(np.float32) * np.float32(255.0)  # one float32 temporary, then in place
    x += np.float32(0.5)
    np.clip(x, 0, 255, out=x)  # +inf -> 255, -inf -> 0
    x[np.isnan(x)] = 0
    return x.astype(np.uint8)


def unit_rows(arrays: Mapping, key: str, unit: int) -> np.ndarray:
    """Rows of an on-demand attachment's arrays that hold ``unit`` (``arrays[key]`` lists the unit of
    each row; a layer with nothing computed yet has no such array: no rows)."""
    return np.flatnonzero(np.asarray(arrays.get(key, np.zeros(0, np.int64))) == unit)


def png_bytes(image: np.ndarray, compress_level: int = 6) -> bytes:
    """Encode an ``(H, W, 3)`` uint8 array as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), mode="RGB").save(buf, format="PNG",
                                                                  compress_level=compress_level)
    return buf.getvalue()


def fit_png(image: np.ndarray, max_px: int) -> bytes:
    """One RGB image (uint8, or float in ``[0, 1]``) as PNG, scaled down so that its longer side is at
    most ``max_px`` (box filter; never scaled up)."""
    img = np.asarray(image)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    h, w = fit_size(img.shape[0], img.shape[1], max_px)
    return png_bytes(to_uint8(box_resize(img[None], h, w)[0]))


def png_strip(tiles: np.ndarray, max_px: int) -> tuple[bytes, tuple[int, int]]:
    """``(png, (h, w))``: images ``(B, H, W, 3)`` (uint8, or float in ``[0, 1]``) side by side in one
    PNG, each scaled down to ``(h, w)`` so that its longer side is at most ``max_px``."""
    tiles = np.asarray(tiles)
    tiles = tiles.astype(np.float32) / 255.0 if tiles.dtype == np.uint8 else tiles.astype(np.float32)
    h, w = fit_size(tiles.shape[1], tiles.shape[2], max_px)
    return png_bytes(sprite_sheet(to_uint8(box_resize(tiles, h, w)), len(tiles))), (int(h), int(w))


def sprite_sheet(tiles: np.ndarray, columns: int) -> np.ndarray:
    """Tile ``(B, h, w, 3)`` uint8 into one ``(rows*h, columns*w, 3)`` image, row-major."""
    B, th, tw, ch = tiles.shape
    columns = max(1, min(columns, B))
    rows = -(-B // columns)
    padded = np.zeros((rows * columns, th, tw, ch), dtype=np.uint8)
    padded[:B] = tiles
    return padded.reshape(rows, columns, th, tw, ch).transpose(0, 2, 1, 3, 4).reshape(
        rows * th, columns * tw, ch)




def thumbnail_source(L) -> np.ndarray | None:
    """``(C, h, w, 3)`` images for the grid: the Neuron Features, else the first top crops."""
    if L.neuron_features is not None:
        return np.asarray(L.neuron_features)
    if L.top_crops is not None and L.top_crops.ndim == 5 and L.top_crops.shape[1] > 0:
        return np.asarray(L.top_crops[:, 0])
    return None


def layer_columns(idx, layer: str, categorical: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Every per-unit column the grid can sort and filter by: :func:`layer_scores` and the
    per-unit columns of the index's attachments, named ``"{attachment}.{column}"`` (as in
    ``idx.to_pandas()``), each float32 ``(C,)``. In the ``categorical`` columns (codes into a list
    of names) a negative code ("none") becomes NaN: it sorts last and no filter keeps it."""
    L = idx[layer]
    columns = layer_scores(L)
    for name, attachment in (getattr(idx, "attachments", None) or {}).items():
        for column in attachment.columns.get(layer, []):
            values = np.asarray(attachment.arrays[layer][column], dtype=np.float32).reshape(-1)
            if values.shape == (L.n_units,):
                key = f"{name}.{column}"
                columns[key] = np.where(values < 0, np.float32(np.nan), values) if key in categorical else values
    return columns


def sprite_columns(n_units: int) -> int:
    """Tiles per row of a layer's sprite sheet: 64, or more for big layers (a square-ish sheet
    stays under the browser's image size limits)."""
    return max(1, min(n_units, max(64, math.ceil(math.sqrt(max(n_units, 1))))))


def thumbnail_sheet(L, thumb_size: int = DEFAULT_THUMB) -> tuple[bytes, int, int]:
    """``(png, columns, tile)``: one PNG sprite sheet of square tiles of :func:`thumbnail_source`,
    unit ``u`` at column ``u % columns``, row ``u // columns``; ``(b"", 0, 0)`` without images.

    Tiles are ``thumb_size`` pixels, or the images' own size when smaller: the browser scales
    them up (pixelated), which costs nothing here and keeps small receptive fields crisp.
    """
    source = thumbnail_source(L)
    if source is None or not L.n_units:
        return b"", 0, 0
    tile = int(min(thumb_size, max(source.shape[1], source.shape[2])))
    if source.dtype == np.uint8 and source.shape[1:3] == (tile, tile):
        tiles = np.ascontiguousarray(source[..., :3])
    else:
        source = source.astype(np.float32) / 255.0 if source.dtype == np.uint8 else source
        tiles = to_uint8(box_resize(source, tile, tile))
    cols = sprite_columns(L.n_units)
    # level 1: a quarter of level 6's time for ~25 % more bytes (~0.6 KB per unit at 24 px)
    return png_bytes(sprite_sheet(tiles, cols), compress_level=1), cols, tile


def layer_payload(idx, layer: str, thumb_size: int = DEFAULT_THUMB, card_arrays: bool = True,
                  categories: Mapping[str, dict] | None = None, views: Mapping[str, Any] | None = None) -> dict:
    """What the front end holds of one layer (js/src/layerdata.js), arrays as :func:`_wire.array`.

    ``scores`` is float32 ``(len(score_names), C)``; ``dead`` uint8 ``(C,)``; ``thumbs`` the
    :func:`thumbnail_sheet`. With ``card_arrays`` also the top-N activations (float32 ``(C, N)``)
    and class labels (``(C, N)``, -1 unlabelled), from which the browser draws a unit's class
    bars and activation profile without asking the kernel. ``categories`` (``column_labels``:
    ``{column: {"names", "groups"}}`` of the categorical columns, see ``views.category_columns``)
    and ``views`` (the card views' layer payloads, ``{view key: payload}``) travel with it.
    """
    from . import _wire

    L = idx[layer]
    categories = dict(categories or {})
    columns = layer_columns(idx, layer, list(categories))
    names = list(columns)
    C = L.n_units
    table = np.stack([columns[n] for n in names]) if names else np.zeros((0, C), np.float32)
    thumbs, cols, tile = thumbnail_sheet(L, thumb_size)
    out = {
        "name": layer,
        "n_units": int(C),
        "top_n": int(L.top_n),
        "score_names": names,
        # the grid's mini bars: the layer's own indexes (not a_1, not other methods' columns)
        "bar_names": [n for n in L.scores if n != TOP_ACTIVATION][:MAX_BARS],
        "scores": _wire.array(table, "float32"),
        "dead": _wire.array(L.dead, "uint8"),
        "thumbs": thumbs,
        "thumb_size": tile,
        "sprite_cols": int(cols),
        "receptive_field": L.receptive_field.to_dict() if L.receptive_field is not None else {},
        "column_labels": {k: v for k, v in categories.items() if k in columns},
        "views": _wire.plain(dict(views or {})),
    }
    if card_arrays:
        n_classes = len(class_names_of(idx, L))
        out["top_activations"] = _wire.array(L.top_activations, "float32")
        out["top_labels"] = _wire.array(L.top_labels, _wire.label_dtype(n_classes))
    return out


# ---------------------------------------------------------------------------------------------
# Annotations (store API: .get(layer, unit), .all(layer) -> {(layer, unit): Annotation})
# ---------------------------------------------------------------------------------------------
def format_time(value: Any) -> str:
    """An annotation time as ISO text (epoch seconds, datetime, or already text)."""
    if value is None or value == "":
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _dt.datetime.fromtimestamp(float(value)).isoformat(sep=" ", timespec="seconds")
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, _dt.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        return text + (" UTC" if value.utcoffset() == _dt.timedelta(0) else "")
    return str(value)


def annotation_dict(annotation: Any, full: bool = False) -> dict:
    """A store ``Annotation`` as a JSON-able dict (``full`` adds author and time)."""
    if annotation is None:
        return {}
    tags = getattr(annotation, "tags", ()) or ()
    if isinstance(tags, str):
        tags = [t for t in (s.strip() for s in tags.split(",")) if t]
    out = {"label": str(getattr(annotation, "label", "") or ""),
           "note": str(getattr(annotation, "note", "") or ""),
           "tags": [str(t) for t in tags]}
    if full:
        out["author"] = str(getattr(annotation, "author", "") or "")
        out["time"] = format_time(getattr(annotation, "time", None))
    return out




def store_revision(store) -> Any:
    """The store's change counter, or None when it has none (then always refresh)."""
    return getattr(store, "revision", None) if store is not None else None


def open_store(annotations, idx):
    """Accept an AnnotationStore-like object, a path (opened as ``AnnotationStore``) or None."""
    if annotations is None:
        return None
    if isinstance(annotations, (str, bytes)) or hasattr(annotations, "__fspath__"):
        from ..annotations import AnnotationStore

        return AnnotationStore(annotations, index=idx)
    for method in ("annotate", "get", "all"):
        if not callable(getattr(annotations, method, None)):
            raise WidgetArgumentError(
                f"annotations must be an AnnotationStore (or a path to one), got "
                f"{type(annotations).__name__} without a .{method}() method")
    return annotations


# ---------------------------------------------------------------------------------------------
# Class frequencies, hierarchy and the class charts
# ---------------------------------------------------------------------------------------------
def class_names_of(idx, L) -> list[str]:
    """Names of the label values of ``L`` (``"class k"`` where the index has none)."""
    names = list(idx.class_names) if idx.class_names is not None else []
    labels = np.asarray(L.top_labels)
    top = int(labels.max()) + 1 if labels.size else 0
    return [str(n) for n in names] + [f"class {k}" for k in range(len(names), top)]


def index_class_names(idx) -> list[str]:
    """Names of every label value in any layer of ``idx`` (``"class k"`` where the index has none)."""
    names = [str(n) for n in (idx.class_names or [])]
    top = max((int(np.asarray(idx[n].top_labels).max()) + 1 for n in idx.layers if np.size(idx[n].top_labels)),
              default=0)
    return names + [f"class {k}" for k in range(len(names), top)]


def ancestry(name: str, parents: Mapping[str, str] | None) -> list[str]:
    """Parents of ``name`` from nearest to root (cycles cut)."""
    chain: list[str] = []
    seen = {name}
    while parents and name in parents and parents[name] not in seen:
        name = parents[name]
        chain.append(name)
        seen.add(name)
    return chain


def class_bars(idx, layer: str, unit: int, top_k: int = 12) -> dict:
    """Class-frequency bars of one unit: the top classes, grouped by parent when the index has a
    class hierarchy. Values are fractions of the unit's labelled top-N weight."""
    L = idx[layer]
    names = class_names_of(idx, L)
    labels = L.top_labels[unit:unit + 1]
    n_labelled = int((labels >= 0).sum())
    freq = _class_frequencies(labels, L.top_activations[unit:unit + 1], len(names))[0] \
        if names else np.zeros(0)
    ranked = [int(c) for c in np.argsort(-freq, kind="stable") if freq[c] > 0]
    parents = idx.class_parents
    classes = [{"name": names[c], "value": float(freq[c]),
                "parent": (ancestry(names[c], parents) or [None])[0]} for c in ranked]
    groups = None
    if parents:
        by_group: dict[str, dict] = {}
        for c in ranked:
            chain = ancestry(names[c], parents)
            group_name = chain[0] if chain else "(no parent)"
            g = by_group.setdefault(group_name, {"name": group_name, "path": list(chain[1:]),
                                                 "value": 0.0, "classes": []})
            g["value"] += float(freq[c])
            g["classes"].append({"name": names[c], "value": float(freq[c])})
        groups = sorted(by_group.values(), key=lambda g: -g["value"])
        shown = 0
        for g in groups:  # keep at most top_k class rows in all
            g["n_classes"] = len(g["classes"])
            g["classes"] = g["classes"][:max(0, top_k - shown)]
            shown += len(g["classes"])
    score = L.scores.get("class_selectivity")
    gamma = float(score[unit]) if score is not None and np.isfinite(score[unit]) else None
    return {
        "classes": classes[:top_k],
        "n_classes_hit": len(ranked),
        "groups": groups,
        "n_labelled": n_labelled,
        "n_top": int(L.top_n),
        "selectivity": gamma,
        "population": int((freq >= 0.1).sum()),
        "dead": bool(L.dead[unit]),
    }


def histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
    """Counts of the finite ``values`` in ``edges`` (NumPy's half-open bins, last one closed)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return [int(c) for c in np.histogram(v, bins=edges)[0]]


def shared_edges(arrays: Sequence[np.ndarray], bins: int, value_range=None) -> np.ndarray:
    """Common bin edges over the finite values of several arrays."""
    finite = [np.asarray(a, dtype=np.float64)[np.isfinite(a)] for a in arrays]
    allv = np.concatenate(finite) if finite else np.zeros(0)
    if value_range is None:
        lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        value_range = (lo, hi)
    return np.histogram_bin_edges(allv, bins=bins, range=value_range)


def layer_score_histogram(L, score: str, bins: int = 20) -> dict:
    """Distribution of one per-unit index over a layer (for ClassSelectivityChart(unit=None))."""
    values = L.scores.get(score)
    if values is None:
        return {"score": score, "missing": True, "available": sorted(L.scores)}
    values = np.asarray(values, dtype=np.float64)
    alive = ~L.dead
    finite = np.isfinite(values) & alive
    # the axis fits the data: class selectivity often lives in [0.9, 1]
    edges = shared_edges([values[finite]], bins)
    return {"score": score, "missing": False, "edges": [float(e) for e in edges],
            "counts": histogram(values[finite], edges), "n_dead": int((~alive).sum()),
            "n_nan": int((alive & ~np.isfinite(values)).sum()), "n_units": int(L.n_units),
            "mean": float(values[finite].mean()) if finite.any() else None}
