"""The card's "generated" view (PPGN samples, docs/methods.md section 10) on the Python side: the on-demand
handler of default_compute, the attachment it extends, the payload against a direct nsi.ppgn call, and the
exported page. A tiny CNN and a tiny generator built here (tests/_models.py)."""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import nsi_widgets as nsi
from _models import ListDataset, make_cnn, make_images
from nsi_widgets.core.errors import InputError
from nsi_widgets.synthesis.generated import merge_generated_attachments, samples_to_attachment
from nsi_widgets.widgets import Explorer, OnDemandSettings, default_compute, export_html
from test_widgets_views import _bundle_built  # noqa: F401  (autouse: the front end must be built)

H, W, D = 20, 24, 4
SETTINGS = OnDemandSettings(generated={"n": 3, "steps": 5, "eps3": 0.1})


class TinyGenerator(nn.Module):
    latent_dim = D

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.fc = nn.Linear(D, 3 * H * W)

    def forward(self, h):
        return torch.sigmoid(self.fc(h)).view(len(h), 3, H, W)


@pytest.fixture(scope="module")
def world():
    model = make_cnn(0)
    images = make_images(30)
    data = ListDataset(images, [i % 3 for i in range(30)], classes=["a", "b", "c"])
    idx = nsi.index_neurons(model, data, ["conv1", "conv3"], top_n=8, progress=False)
    return model, data, idx, TinyGenerator()


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _computed(ex, layer, unit, sent):
    ex.compute("generated", layer, unit)
    ex.wait_for_computations(timeout=120)
    errors = [c for c, _ in sent if c["type"] == "progress" and c["state"] == "error"]
    assert not errors, errors
    return ex.unit_payload(layer, unit)["generated"]


def test_generated_view_computes_attaches_and_shows_in_the_exported_page(world, tmp_path):
    model, data, idx, generator = world
    assert "generated" not in default_compute(model, data)
    ex = Explorer(idx, layer="conv3", compute=default_compute(model, data, generator=generator, settings=SETTINGS),
                  autosave=tmp_path / "index.npz")
    sent = []
    ex.send = lambda content, buffers=None: sent.append((content, buffers))
    spec = {v["key"]: v for v in ex.card_views}["generated"]
    assert spec["compute"] == "Generate" and spec["placement"] == "card"
    assert ex.unit_payload("conv3", 2)["generated"] == {"missing": True}   # nothing attached yet

    payload = _computed(ex, "conv3", 2, sent)
    direct = nsi.ppgn(model, generator, ("conv3", 2), n=3, steps=5, eps3=0.1, lr=0.2, eps1=0.1, progress=False)
    expected = np.round(np.clip(direct.images, 0, 1) * 255).astype(np.uint8)
    arrays = idx.attachments["generated"].arrays["conv3"]
    np.testing.assert_array_equal(arrays["images"][0], expected)
    assert payload["computed"] and payload["n"] == 3 and payload["tile"] == [H, W]
    strip = _png(payload["strip"])          # small images go at their own size
    for i in range(3):
        np.testing.assert_array_equal(strip[:, i * W:(i + 1) * W], expected[i])
    np.testing.assert_allclose(payload["values"], direct.values, rtol=1e-6)
    best = int(np.argmax(direct.values))
    np.testing.assert_allclose(payload["history"], direct.history[:, best], rtol=1e-6)
    assert "steps 5" in payload["recipe"] and "eps3 0.1" in payload["recipe"]
    progress = [c for c, _ in sent if c["type"] == "progress" and c["view"] == "generated"]
    assert progress[-1]["state"] == "done"

    # a second unit extends the attachment; the first stays
    _computed(ex, "conv3", 4, sent)
    assert idx.attachments["generated"].arrays["conv3"]["units"].tolist() == [2, 4]
    np.testing.assert_array_equal(idx.attachments["generated"].arrays["conv3"]["images"][0], expected)

    reloaded = nsi.load_index(tmp_path / "index.npz")
    assert reloaded.attachments["generated"].arrays["conv3"]["units"].tolist() == [2, 4]
    doc = json.loads(re.search(r'id="nsi-state">(.*?)</script>', export_html(ex, tmp_path / "page.html").read_text(),
                               re.S).group(1))
    page = doc["units"]["conv3"]
    assert page["2"]["generated"]["computed"] and page["4"]["generated"]["computed"]
    assert not page["0"]["generated"]["computed"]


def test_generated_attachments_merge_by_unit_and_refuse_other_settings(world):
    model, _, _, generator = world
    a = samples_to_attachment(nsi.ppgn(model, generator, ("conv3", [1, 3]), n=2, steps=2, progress=False))
    b = samples_to_attachment(nsi.ppgn(model, generator, ("conv3", 3), n=2, steps=2, seed=0, progress=False))
    merged = merge_generated_attachments(a, b)
    assert merged.arrays["conv3"]["units"].tolist() == [1, 3]
    np.testing.assert_array_equal(merged.arrays["conv3"]["images"], a.arrays["conv3"]["images"])
    other = samples_to_attachment(nsi.ppgn(model, generator, ("conv3", 3), n=2, steps=3, progress=False))
    with pytest.raises(InputError, match="other settings"):
        merge_generated_attachments(a, other)
    with pytest.raises(InputError, match="unit targets"):
        samples_to_attachment(nsi.ppgn(model, generator, 1, n=1, steps=1, progress=False))
