"""Tests of bmcore.data.preprocess: brain mask, z-scoring, in-plane resize and its inverse."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bmcore import imaging
from bmcore.data import preprocess
from bmcore.data.synth import synth_cohort


@pytest.fixture(scope="module")
def full_plane_cohort(tmp_path_factory):
    """BraTS-layout studies at the full 240 × 240 in-plane grid, 1 mm, a thin slab of 24 slices."""
    root = tmp_path_factory.mktemp("full-plane")
    synth_cohort(root, 4, 3, "brats", shape=(240, 240, 24), spacing=(1.0, 1.0, 1.0), workers=1)
    return root


def test_normalize_zscores_inside_mask_and_zeroes_outside():
    rng = np.random.default_rng(0)
    image = np.stack([rng.normal(500, 80, (32, 32, 8)), rng.gamma(2.0, 300, (32, 32, 8))]).astype(np.float32)
    image[:, 0, 0, 0] = 1e6  # an outlier that must be clipped
    mask = np.zeros((32, 32, 8), bool)
    mask[4:28, 4:28, :] = True
    out = preprocess.normalize(image, mask, clip=5.0)
    assert out.dtype == np.float32 and out.shape == image.shape
    for channel in out:
        assert abs(float(channel[mask].mean())) < 0.02
        assert float(channel[mask].std()) == pytest.approx(1.0, abs=0.05)
        assert not channel[~mask].any()
    assert out.max() <= 5.0 and out.min() >= -5.0
    image[:, 10, 10, 3] = 1e6
    assert preprocess.normalize(image, mask)[:, 10, 10, 3] == pytest.approx([5.0, 5.0])
    with pytest.raises(ValueError, match="brain mask is empty"):
        preprocess.normalize(image, np.zeros_like(mask))


def test_brain_mask_on_synthetic_head(brats_cohort):
    volume = imaging.load_study(imaging.find_studies(brats_cohort)[0])
    mask = preprocess.brain_mask(volume.image)
    head = (volume.image > 0).all(axis=0)
    assert mask.shape == volume.image.shape[1:] and mask.dtype == bool
    assert (mask & head).sum() / head.sum() > 0.95
    assert not mask[0, 0, 0] and mask[32, 32, 20]
    assert ndimage.label(mask)[1] == 1


def test_resize_shapes_and_label_values():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(4, 240, 200, 7)).astype(np.float32)
    label = rng.integers(0, 4, (240, 200, 7)).astype(np.uint8)
    assert preprocess.resize_image(image, 256).shape == (4, 256, 256, 7)
    resized = preprocess.resize_label(label, 256)
    assert resized.shape == (256, 256, 7) and resized.dtype == np.uint8
    assert set(np.unique(resized).tolist()) <= {0, 1, 2, 3}
    image_out, mask = preprocess.preprocess_image(np.abs(image) + (label[None] > 0), size=128)
    assert image_out.shape == (4, 128, 128, 7) and mask.shape == (240, 200, 7)


@pytest.mark.parametrize("native", [(240, 240), (182, 218), (37, 100)])
def test_label_round_trip_is_exact_when_the_resize_enlarges(native):
    label = np.random.default_rng(2).integers(0, 4, (*native, 3)).astype(np.uint8)
    back = preprocess.label_to_native(preprocess.resize_label(label, 256), native)
    np.testing.assert_array_equal(back, label)


def test_label_round_trip_from_a_larger_grid_keeps_shapes_and_big_regions():
    label = np.zeros((300, 512, 2), np.uint8)
    label[100:160, 200:300] = 2
    label[120:140, 230:260] = 3
    back = preprocess.label_to_native(preprocess.resize_label(label, 256), (300, 512))
    assert back.shape == label.shape
    assert (back == label).mean() > 0.99


def test_probabilities_to_native_follows_smooth_maps():
    """A soft blob's argmax region keeps its place and size after going back to the native grid."""
    x, y = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    blob = np.exp(-((x - 100.3) ** 2 + (y - 150.7) ** 2) / (2 * 12.0**2))[..., None]
    probabilities = np.stack([1 - blob, blob]).astype(np.float32)
    native = preprocess.probabilities_to_native(probabilities, (240, 240))[..., 0]
    scale = 240 / 256
    expected = (
        ((np.arange(240)[:, None] + 0.5) / scale - 0.5 - 100.3) ** 2
        + ((np.arange(240)[None, :] + 0.5) / scale - 0.5 - 150.7) ** 2
    ) < 2 * 12.0**2 * np.log(2)
    assert (native.astype(bool) ^ expected).sum() <= 0.05 * expected.sum()


def test_every_lesion_of_3mm_or_more_survives_the_round_trip(full_plane_cohort):
    """Acceptance: resize a full-resolution label to 256² and back; Dice ≥ 0.9 for each lesion ≥ 3 mm."""
    tested = 0
    for ref in imaging.find_studies(full_plane_cohort):
        label = imaging.load_study(ref).label
        back = preprocess.label_to_native(preprocess.resize_label(label, 256), label.shape[:2])
        core, core_back = np.isin(label, (1, 3)), np.isin(back, (1, 3))
        components, count = ndimage.label(core, structure=np.ones((3, 3, 3)))
        for index in range(1, count + 1):
            lesion = components == index
            diameter = (6 * lesion.sum() / np.pi) ** (1 / 3)  # equivalent sphere, 1 mm voxels
            if diameter < 3.0:
                continue
            near = ndimage.binary_dilation(lesion, iterations=2)
            a, b = core & near, core_back & near
            lesion_dice = 2 * (a & b).sum() / (a.sum() + b.sum())
            assert lesion_dice >= 0.9, (
                f"{ref.study_id} lesion {index}: {diameter:.1f} mm, Dice {lesion_dice:.3f}"
            )
            for value in (1, 2, 3):  # every class of the lesion's neighbourhood too
                region = near & ((label == value) | (back == value))
                if region.sum() >= 10:
                    assert ((label == value) & (back == value) & near).sum() / region.sum() >= 0.8
            tested += 1
    assert tested >= 3


def test_small_lesions_survive_anywhere_on_the_grid():
    """3 mm spheres at random sub-voxel positions (bilinear one-hot sampling used to erode their corners)."""
    rng = np.random.default_rng(4)
    x, y, z = np.ogrid[:240, :240, :9]
    for _ in range(15):  # the old bilinear inverse failed ~1 placement in 4
        c = rng.uniform(10, 230, 3)
        c[2] = rng.uniform(3.5, 5.5)
        label = (((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) <= 1.5**2).astype(np.uint8) * 3
        back = preprocess.label_to_native(preprocess.resize_label(label, 256), (240, 240))
        a, b = label > 0, back > 0
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.9
