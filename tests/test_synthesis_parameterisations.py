"""Image statistics and parameterisations against NumPy reference implementations written here
(docs/methods.md section 9): colour decorrelation matrix, amplitude spectrum, pixel and Fourier images."""
import numpy as np
import pytest
import torch

from nsi_widgets.core.errors import InputError
from nsi_widgets.synthesis.parameterisations import FourierImage, PixelImage, RawImage, lucid_spectrum, make_image
from nsi_widgets.synthesis.statistics import image_statistics, resolve_statistics


def _images(n=12, h=10, w=9, seed=0):
    """Correlated colours and smooth structure, so that the statistics are not trivial."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, 1, h, w))
    tint = rng.random((n, 3, 1, 1))
    noise = rng.random((n, 3, h, w)) * 0.2
    return torch.from_numpy(np.clip(0.6 * base + 0.3 * tint + noise, 0, 1)).float()


def _reference_statistics(x):
    """The definitions of docs/methods.md section 9, in NumPy float64."""
    x = x.double().numpy()
    pixels = x.transpose(0, 2, 3, 1).reshape(-1, 3)
    mean = pixels.mean(0)
    cov = np.cov(pixels.T)
    values, vectors = np.linalg.eigh(cov)
    sqrt = vectors @ np.diag(np.sqrt(values))
    m = sqrt / np.linalg.norm(sqrt, axis=0).max()
    z = np.einsum("ij,nhwj->nihw", np.linalg.inv(m), x.transpose(0, 2, 3, 1) - mean)
    h, w = x.shape[-2:]
    amplitude = np.abs(np.fft.rfft2(z, norm="ortho")).mean(axis=(0, 1))
    full = np.abs(np.fft.fft2(z, norm="ortho")).mean(axis=(0, 1))  # the whole spectrum, for the rms
    return mean, cov, m, amplitude / np.sqrt((full ** 2).mean())


def test_statistics_match_the_definition():
    x = _images()
    s = image_statistics(x)
    mean, cov, m, spectrum = _reference_statistics(x)
    np.testing.assert_allclose(s.mean, mean, rtol=1e-6)
    # M M^T is the covariance divided by its largest eigenvalue (lucid's normalisation of the square root)
    np.testing.assert_allclose(s.color_matrix @ s.color_matrix.T, cov / np.linalg.eigvalsh(cov).max(), atol=1e-9)
    np.testing.assert_allclose(np.abs(s.color_matrix), np.abs(m), atol=1e-6)  # eigenvector signs are free
    np.testing.assert_allclose(s.spectrum, spectrum, rtol=1e-5)
    assert s.image_size == (10, 9) and s.n_images == 12


def test_statistics_read_a_dataset_like_a_tensor(tiny_data):
    from_dataset = image_statistics(tiny_data, max_images=5)
    chosen = np.unique(np.linspace(0, len(tiny_data) - 1, 5).round().astype(int))
    tensor = torch.stack([tiny_data[int(i)][0] for i in chosen])
    direct = image_statistics(tensor)
    np.testing.assert_allclose(from_dataset.spectrum, direct.spectrum, rtol=1e-6)
    np.testing.assert_allclose(from_dataset.color_matrix, direct.color_matrix, atol=1e-8)


def test_spectrum_at_another_size_keeps_the_shape_of_the_spectrum():
    s = image_statistics(_images(h=16, w=16))
    assert s.spectrum_at((16, 16)) is s.spectrum
    same = s.spectrum_at((16, 16))
    np.testing.assert_array_equal(same, s.spectrum)
    # a radially symmetric spectrum sampled at a finer grid: the DC value and the rms (1) are kept in ratio
    finer = s.spectrum_at((32, 32))
    assert finer.shape == (32, 17)
    weights = np.full(finer.shape, 2.0)
    weights[:, 0] = weights[:, -1] = 1
    assert np.sqrt((weights * finer ** 2).sum() / (32 * 32)) == pytest.approx(1.0)
    # frequency (0, 1/4 cycles per pixel) is entry (0, 4) at 16 px and (0, 8) at 32 px
    ratio_16 = s.spectrum[0, 4] / s.spectrum[0, 0]
    ratio_32 = finer[0, 8] / finer[0, 0]
    assert ratio_32 == pytest.approx(ratio_16, rel=1e-5)


def test_lucid_spectrum_is_one_over_f_at_unit_rms():
    a = lucid_spectrum((8, 6))
    f = np.sqrt(np.fft.fftfreq(8)[:, None] ** 2 + np.fft.rfftfreq(6)[None, :] ** 2)
    ref = 1 / np.maximum(f, 1 / 8)
    np.testing.assert_allclose(a / a[0, 1], ref / ref[0, 1])
    full = 1 / np.maximum(np.sqrt(np.fft.fftfreq(8)[:, None] ** 2 + np.fft.fftfreq(6)[None, :] ** 2), 1 / 8)
    np.testing.assert_allclose(a, ref / np.sqrt((full ** 2).mean()), rtol=1e-12)


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def test_pixel_image_is_the_decorrelated_sigmoid():
    s = image_statistics(_images())
    image = PixelImage((5, 4), seeds=[3, 4], statistics=s, sd=0.5)
    z = image.z.detach().double().numpy()
    mean = np.clip(s.mean, 0.02, 0.98)
    ref = _sigmoid(np.einsum("ij,bjhw->bihw", s.color_matrix, z) + np.log(mean / (1 - mean))[None, :, None, None])
    np.testing.assert_allclose(image().detach().numpy(), ref, rtol=1e-5, atol=1e-6)


def test_fourier_image_is_the_scaled_inverse_fft():
    s = image_statistics(_images(h=6, w=7))
    for size in ((6, 7), (8, 8)):
        image = FourierImage(size, seeds=[1, 2, 3], statistics=s, sd=0.3)
        spec = image.spectrum.detach().double().numpy()
        coefficients = (spec[..., 0] + 1j * spec[..., 1]) * s.spectrum_at(size)
        z = np.fft.irfft2(coefficients, s=size, norm="ortho")
        mean = np.clip(s.mean, 0.02, 0.98)
        ref = _sigmoid(np.einsum("ij,bjhw->bihw", s.color_matrix, z) + np.log(mean / (1 - mean))[None, :, None, None])
        np.testing.assert_allclose(image().detach().numpy(), ref, rtol=1e-5, atol=1e-6)
        assert image().shape == (3, 3) + size


def test_without_statistics_identity_colour_grey_mean_and_lucid_spectrum():
    image = FourierImage((6, 6), seeds=[0], statistics=None, sd=0.2)
    spec = image.spectrum.detach().double().numpy()
    z = np.fft.irfft2((spec[..., 0] + 1j * spec[..., 1]) * lucid_spectrum((6, 6)), s=(6, 6), norm="ortho")
    np.testing.assert_allclose(image().detach().numpy(), _sigmoid(z), rtol=1e-5, atol=1e-6)
    assert resolve_statistics(None, None) is None


def test_each_image_starts_from_its_own_seed():
    a = make_image("fft", (5, 5), [7, 8], None)
    b = make_image("fft", (5, 5), [9, 8], None)
    assert torch.equal(a.spectrum[1], b.spectrum[1]) and not torch.equal(a.spectrum[0], b.spectrum[0])
    with pytest.raises(ValueError, match="param"):
        make_image("cppn", (5, 5), [0], None)


def test_raw_image_projects_into_the_unit_range():
    raw = RawImage(torch.full((1, 3, 2, 2), 0.5))
    with torch.no_grad():
        raw.x += torch.tensor([1.0, -1.0, 0.2]).view(1, 3, 1, 1)
    raw.project()
    np.testing.assert_allclose(raw().detach().numpy()[0, :, 0, 0], [1.0, 0.0, 0.7], rtol=1e-6)


def test_bad_decorrelate_and_flat_images_are_refused():
    with pytest.raises(InputError, match="decorrelate"):
        resolve_statistics("imagenet", None)
    with pytest.raises(InputError, match="contrast"):
        image_statistics(torch.full((2, 3, 4, 4), 0.5))
