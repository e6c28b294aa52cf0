"""Concept ground truth of the embedded default (nsi.zoo.load_concepts): exact masks.

The masks are checked against the geometry written out here (polygons and circles of the
documented sizes, point in polygon by ray casting), against the analytic areas within the
documented anti-aliasing tolerance, and for the partition of the pixels within each category.
"""
import numpy as np
import pytest
import torch

from nsi_widgets import zoo
from nsi_widgets.zoo.render import area, perimeter


@pytest.fixture(scope="module")
def concepts():
    return zoo.ConceptDataset(zoo.make_shapes(360, seed=21, masks=True))


def polygon_inside(u, v, vertices):
    """Even-odd ray casting: is each point (u, v) inside the polygon (vertices (k, 2))?"""
    inside = np.zeros(u.shape, bool)
    k = len(vertices)
    for i in range(k):
        (u1, v1), (u2, v2) = vertices[i], vertices[(i + 1) % k]
        crosses = (v1 > v) != (v2 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            u_at = u1 + (v - v1) * (u2 - u1) / (v2 - v1)
        inside ^= crosses & (u < u_at)
    return inside


def regular(radii, angles):
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def reference_inside(kind, u, v, r):
    """The documented shapes (docs/zoo.md) of nominal radius r in their own frame (u, v)."""
    rho = np.hypot(u, v)
    if kind == "circle":
        return rho <= r
    if kind == "ring":
        return (rho >= 0.5 * r) & (rho <= 1.02 * r)
    if kind == "square":
        return (np.abs(u) <= 0.82 * r) & (np.abs(v) <= 0.82 * r)
    if kind == "cross":
        return (((np.abs(u) <= r) & (np.abs(v) <= 0.34 * r)) | ((np.abs(v) <= r) & (np.abs(u) <= 0.34 * r)))
    if kind == "triangle":   # equilateral, circumradius 1.25 r, a corner at -90 degrees
        return polygon_inside(u, v, regular(np.full(3, 1.25 * r), np.deg2rad([-90, 30, 150])))
    if kind == "star":       # 5 tips at radius 1.25 r (one at 0 degrees), inner corners at 0.5 r
        angles = np.deg2rad(np.arange(10) * 36.0)
        return polygon_inside(u, v, regular(np.where(np.arange(10) % 2 == 0, 1.25 * r, 0.5 * r), angles))
    raise AssertionError(kind)


def frame(gt, i, size):
    """Pixel centres in image i's shape frame: rotated by the shape's rotation about its centre."""
    centres = np.arange(size) + 0.5
    dy = centres[:, None] - float(gt["center"][i, 0])
    dx = centres[None, :] - float(gt["center"][i, 1])
    t = np.deg2rad(float(gt["rotation"][i]))
    return np.cos(t) * dx + np.sin(t) * dy, np.cos(t) * dy - np.sin(t) * dx


def test_masks_are_the_documented_geometry(concepts):
    gt = concepts.ground_truth
    size = concepts.image_size[0]
    unclear = total = 0
    for i in range(len(concepts)):
        kind, r = str(gt["shape"][i]), float(gt["radius"][i])
        u, v = frame(gt, i, size)
        want = reference_inside(kind, u, v, r)
        # pixels within 1e-3 px of the outline are left to float rounding
        eps = 1e-3
        near = np.zeros_like(want)
        for du, dv in ((eps, 0), (-eps, 0), (0, eps), (0, -eps)):
            near |= reference_inside(kind, u + du, v + dv, r) != want
        got = concepts.shapes.object_masks[i]
        assert np.array_equal(got[~near], want[~near]), (i, kind)
        unclear += int(near.sum())
        total += int(want.sum())
    assert unclear < 1e-3 * total


def test_mask_areas_match_the_analytic_areas(concepts):
    # Documented tolerance: |pixel count - area| <= perimeter / 4 + 1 per shape (the inside rule
    # counts pixel centres; only pixels cut by the outline can go either way), and no bias.
    gt = concepts.ground_truth
    counts = concepts.shapes.object_masks.sum(axis=(1, 2)).astype(np.float64)
    for kind in zoo.SHAPE_KINDS:
        sel = gt["shape"] == kind
        assert sel.sum() >= 40
        r = gt["radius"][sel].astype(np.float64)
        a, p = area(kind, r), perimeter(kind, r)
        assert (np.abs(counts[sel] - a) <= p / 4 + 1).all(), kind
        assert abs(np.mean(counts[sel] / a) - 1) < 0.01, kind


def outline(kind, r):
    """Vertices of the polygonal shapes (radius r), for their perimeters."""
    a, w = r, 0.34 * r
    return {
        "square": regular(np.full(4, 0.82 * r * np.sqrt(2)), np.deg2rad([45, 135, 225, 315])),
        "triangle": regular(np.full(3, 1.25 * r), np.deg2rad([-90, 30, 150])),
        "star": regular(np.where(np.arange(10) % 2 == 0, 1.25 * r, 0.5 * r), np.deg2rad(np.arange(10) * 36.0)),
        "cross": np.array([(a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w), (-w, -a),
                           (w, -a), (w, -w), (a, -w)]),
    }[kind]


def test_analytic_areas_and_perimeters_against_the_reference_geometry():
    # Areas by counting a fine grid, perimeters from the vertices (or circles), radius 10.
    step = 0.02
    grid = np.arange(-14, 14, step) + step / 2
    u, v = np.meshgrid(grid, grid)
    for kind in zoo.SHAPE_KINDS:
        inside = reference_inside(kind, u, v, 10.0)
        assert inside.sum() * step ** 2 == pytest.approx(area(kind, 10.0), rel=2e-3), kind
        if kind in ("circle", "ring"):
            length = 2 * np.pi * 10.0 * (1.0 if kind == "circle" else 1.02 + 0.5)
        else:
            vertices = outline(kind, 10.0)
            assert reference_inside(kind, *(0.999 * vertices.T), 10.0).all()   # the outline of that shape
            length = np.linalg.norm(np.roll(vertices, -1, axis=0) - vertices, axis=1).sum()
        assert perimeter(kind, 10.0) == pytest.approx(length, rel=1e-9), kind


def test_masks_partition_the_pixels_within_each_category(concepts):
    slices = concepts.category_slices()
    assert list(slices) == ["shape", "colour", "texture", "background"]
    assert concepts.concepts[slices["shape"]] == list(zoo.SHAPE_KINDS)
    assert concepts.concepts[slices["colour"]] == list(zoo.COLORS)
    assert concepts.concepts[slices["texture"]] == list(zoo.BACKGROUND_KINDS)
    assert concepts.concepts[slices["background"]] == ["background"]
    assert [concepts.concept_categories[i] for i in range(len(concepts.concepts))] == (
        ["shape"] * 6 + ["colour"] * 10 + ["texture"] * 4 + ["background"])
    masks = concepts.masks()
    gt = concepts.ground_truth
    background = masks[:, slices["background"].start]
    assert np.array_equal(background, ~concepts.shapes.object_masks)
    for category in ("shape", "colour"):
        # every pixel is background or in exactly one mask of the category ...
        count = masks[:, slices[category]].sum(axis=1) + background
        assert (count == 1).all(), category
    # ... and that mask is the image's own shape kind / colour
    rows = np.arange(len(concepts))
    assert np.array_equal(masks[rows, slices["shape"].start + gt["shape_id"]], concepts.shapes.object_masks)
    assert np.array_equal(masks[rows, slices["colour"].start + gt["color_id"]], concepts.shapes.object_masks)
    # texture masks split the background pixels: all of them go to the image's texture
    textures = masks[:, slices["texture"]]
    assert np.array_equal(textures.sum(axis=1), background)
    assert np.array_equal(textures[rows, gt["background_id"]], background)


def test_masks_agree_with_the_pixels(concepts):
    # Inside rule = coverage >= 0.5: on flat backgrounds a masked pixel lies nearer the shape's colour.
    flat = zoo.ConceptDataset(zoo.make_shapes(120, seed=22, masks=True, backgrounds=("flat",)))
    gt = flat.ground_truth
    image = flat.shapes.pixels.astype(np.float64) / 255
    fg, bg = gt["color_rgb"].astype(np.float64), gt["background_rgb"].astype(np.float64)
    step = fg - bg
    coverage = np.einsum("nchw,nc->nhw", image - bg[:, :, None, None], step) / (step ** 2).sum(1)[:, None, None]
    noise = 5 * (0.012 + 1 / 255) / np.sqrt((step ** 2).sum(1))[:, None, None]   # five sigma, in coverage units
    inside = flat.shapes.object_masks
    assert (coverage[inside] >= (0.5 - noise.repeat(64 * 64).reshape(inside.shape)[inside])).all()
    assert (coverage[~inside] <= (0.5 + noise.repeat(64 * 64).reshape(inside.shape)[~inside])).all()


def test_concept_dataset_items_and_loader():
    data = zoo.load_concepts("shapes", n=30, seed=5)
    assert isinstance(data, torch.utils.data.Dataset) and len(data) == 30
    plain = zoo.make_shapes(30, seed=5)
    assert np.array_equal(data.shapes.pixels, plain.pixels)      # masks do not change the images
    image, masks = data[7]
    assert torch.equal(image, plain[7][0])
    assert masks.dtype == np.bool_ and masks.shape == (len(zoo.CONCEPTS), 64, 64)
    assert np.array_equal(data.masks([7])[0], masks)
    assert data.concepts == zoo.CONCEPTS and data.concept_categories == zoo.CONCEPT_CATEGORIES
    assert data.labels.tolist() == plain.labels.tolist() and data.classes == plain.classes
    default = zoo.load_concepts("shapes", n=3)
    assert default.shapes.seed == zoo.CONCEPT_SEED
    with pytest.raises(ValueError, match="available: shapes"):
        zoo.load_concepts("imagenet")
    with pytest.raises(ValueError, match="masks=True"):
        zoo.ConceptDataset(plain)
