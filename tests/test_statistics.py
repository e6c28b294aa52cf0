"""The paper's layer statistics (nsi.layer_statistics), their charts, galleries and HTML fragment.

Checked against brute force on a fake index with dead units, an alive unit with a NaN score and
ties; the statistics of the embedded default itself are tested in test_zoo.py.
"""
import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

import nsi_widgets as nsi
from nsi_widgets.core.errors import InputError
from nsi_widgets.index.statistics import DEFAULT_THRESHOLDS, most_selective
from nsi_widgets.widgets import _data
from nsi_widgets.widgets.statistics import gallery_figure, means_figure, selectivity_figure, statistics_html
from _fake_index import make_fake_index

LAYERS = (("conv1", 12, 5), ("conv2", 40, 13), ("conv3", 30, 21))


@pytest.fixture(scope="module")
def idx():
    index = make_fake_index(LAYERS, seed=3)
    index["conv2"].scores["class_selectivity"][5] = np.nan   # an alive unit without a class index
    return index


def brute_force_row(L, score, thresholds):
    alive = [u for u in range(L.n_units) if L.top_activations[u, 0] > 0]
    values = [float(L.scores[score][u]) for u in alive if np.isfinite(L.scores[score][u])]
    row = {"units": L.n_units, "dead": L.n_units - len(alive), "alive": len(alive),
           "mean": sum(values) / len(values), "defined": len(values)}
    for t in thresholds:
        row[t] = sum(v >= t for v in values) / len(alive)
    return row


def test_layer_statistics_equal_brute_force(idx):
    stats = nsi.layer_statistics(idx, thresholds={"color_selectivity": [0.2, 0.5], "class_selectivity": 0.8})
    assert list(stats.index) == idx.layers and list(stats["depth"]) == [1, 2, 3]
    for name in idx.layers:
        L = idx[name]
        for score, prefix, thresholds in (("color_selectivity", "color", [0.2, 0.5]),
                                          ("class_selectivity", "class", [0.8])):
            want = brute_force_row(L, score, thresholds)
            row = stats.loc[name]
            assert (row["units"], row["dead"], row["alive"]) == (want["units"], want["dead"], want["alive"])
            assert row[f"{prefix}_mean"] == pytest.approx(want["mean"], rel=1e-6)
            assert row[f"{prefix}_defined"] == want["defined"]
            for t in thresholds:
                assert row[f"{prefix}>={t:g}"] == pytest.approx(want[t]), (name, prefix, t)
    assert stats.loc["conv2", "class_defined"] == stats.loc["conv2", "alive"] - 1   # the NaN unit
    assert stats.loc["conv1", "dead"] >= 1


def test_thresholds_forms_and_errors(idx):
    default = nsi.layer_statistics(idx)
    assert [c for c in default.columns if ">=" in c] == (
        [f"color>={t:g}" for t in DEFAULT_THRESHOLDS["color_selectivity"]]
        + [f"class>={t:g}" for t in DEFAULT_THRESHOLDS["class_selectivity"]])
    shared = nsi.layer_statistics(idx, thresholds=[0.3, 0.6])
    assert {"color>=0.3", "color>=0.6", "class>=0.3", "class>=0.6"} <= set(shared.columns)
    one = nsi.layer_statistics(idx, thresholds=0.5, scores=["symmetry_selectivity"])
    assert "symmetry>=0.5" in one.columns and "color_mean" not in one.columns
    with pytest.raises(InputError, match="not among the scores"):
        nsi.layer_statistics(idx, thresholds={"colour": [0.5]})
    with pytest.raises(InputError, match="in no layer"):
        nsi.layer_statistics(idx, scores=["orientation_selectivity"])


def test_most_selective_orders_by_value_then_top_activation_without_dead_or_nan(idx):
    chosen = most_selective(idx, "color_selectivity", k=5)
    for name in idx.layers:
        L = idx[name]
        candidates = [u for u in range(L.n_units)
                      if L.top_activations[u, 0] > 0 and np.isfinite(L.color_selectivity[u])]
        want = sorted(candidates, key=lambda u: (-float(L.color_selectivity[u]), -float(L.top_activations[u, 0]), u))[:5]
        assert chosen[name][0].tolist() == want
        np.testing.assert_array_equal(chosen[name][1], L.color_selectivity[want].astype(np.float64))
    with pytest.raises(InputError):
        most_selective(idx, "color_selectivity", k=0)


def test_charts_show_the_statistics(idx):
    stats = nsi.layer_statistics(idx)
    fig = selectivity_figure(stats, "class_selectivity")
    assert [trace.name for trace in fig.data] == [f">= {t:g}" for t in DEFAULT_THRESHOLDS["class_selectivity"]]
    for trace, t in zip(fig.data, DEFAULT_THRESHOLDS["class_selectivity"]):
        assert list(trace.x) == idx.layers
        np.testing.assert_allclose(trace.y, stats[f"class>={t:g}"].to_numpy())
    means = means_figure(stats)
    np.testing.assert_allclose(means.data[0].y, stats["color_mean"].to_numpy())
    np.testing.assert_allclose(means.data[1].error_y.array, stats["class_std"].to_numpy())


def test_gallery_tiles_are_the_chosen_neuron_features(idx):
    fig = gallery_figure(idx, "color_selectivity", per_layer=4, thumb=16)
    mosaic = np.asarray(fig.data[0].z)
    chosen = most_selective(idx, "color_selectivity", 4)
    cell = 16 + 4
    for r, name in enumerate(idx.layers):
        for c, unit in enumerate(chosen[name][0]):
            want = _data.to_uint8(_data.box_resize(idx[name].neuron_features[[unit]], 16, 16))[0]
            top = r * (cell + 14)
            np.testing.assert_array_equal(mosaic[top:top + 16, c * cell:c * cell + 16], want)
    texts = [a.text for a in fig.layout.annotations]
    assert f"{chosen['conv1'][0][0]}: {chosen['conv1'][1][0]:.2f}" in texts


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.srcs, self.stack, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.srcs += [v for k, v in attrs if k in ("src", "href")]
        if tag not in ("img", "line", "circle", "polyline", "meta", "br"):
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        self.srcs += [v for k, v in attrs if k in ("src", "href")]

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_html_fragment_is_self_contained_and_escaped():
    index = make_fake_index((("conv1", 12, 5), ("<b>deep</b> & layer", 20, 9)), seed=1)
    fragment = statistics_html(index, per_layer=3, thumb=12)
    parser = _Collector()
    parser.feed(fragment)
    assert parser.stack == [] and parser.tags[0] == "section"
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    assert not re.search(r"url\(", fragment)
    assert parser.srcs and all(src.startswith("data:image/png;base64,") for src in parser.srcs)
    assert parser.tags.count("svg") == 3 and parser.tags.count("img") == 2 * 2 * 3   # 2 scores x 2 layers x 3
    assert "<b>deep</b>" not in fragment and "&lt;b&gt;deep&lt;/b&gt; &amp; layer" in fragment
    # the images are the Neuron Features of the chosen units
    chosen = most_selective(index, "color_selectivity", 3)
    first = Image.open(io.BytesIO(base64.b64decode(parser.srcs[0].split(",", 1)[1])))
    want = _data.to_uint8(_data.box_resize(index["conv1"].neuron_features[[chosen["conv1"][0][0]]], 12, 12))[0]
    np.testing.assert_array_equal(np.asarray(first.convert("RGB")), want)
    # the table holds the statistics' numbers
    stats = nsi.layer_statistics(index)
    assert f"{stats.loc['conv1', 'color_mean']:.3f}" in "".join(parser.text)
