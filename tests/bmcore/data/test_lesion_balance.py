"""Lesion-balanced sampling: every lesion as likely as any other, whatever the number of slices it spans."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bmcore.data.dataset import lesion_sampler
from bmcore.data.lesion_balance import lesion_centre, slice_weights


def two_lesions() -> np.ndarray:
    """A 12-slice lesion (slices 2-13) and a 2-slice one (slices 20-21) that share no slice."""
    label = np.zeros((32, 32, 24), dtype=np.uint8)
    label[4:12, 4:12, 2:14] = 3
    label[20:22, 20:22, 20:22] = 1
    return label


def test_each_lesion_carries_a_total_weight_of_one_shared_by_its_slices():
    weights = slice_weights(two_lesions())
    np.testing.assert_allclose(weights[2:14], 1 / 12)
    np.testing.assert_allclose(weights[20:22], 1 / 2)
    assert weights[2:14].sum() == pytest.approx(1.0) and weights[20:22].sum() == pytest.approx(1.0)
    assert not weights[[0, 1, 14, 19, 22, 23]].any()
    assert not slice_weights(np.zeros((8, 8, 4), dtype=np.uint8)).any()


def test_a_slice_showing_two_lesions_weighs_both():
    label = two_lesions()
    label[26:28, 2:4, 5:7] = 3  # a third lesion, two slices inside the big one's span
    weights = slice_weights(label)
    np.testing.assert_allclose(weights[5:7], 1 / 12 + 1 / 2)
    np.testing.assert_allclose(weights[7:14], 1 / 12)


def test_a_crop_centre_falls_on_each_lesion_of_the_slice_alike():
    label = np.zeros((40, 40), dtype=np.uint8)
    label[2:20, 2:20] = 2  # 324 voxels
    label[30, 30] = 3  # one voxel
    rng = np.random.default_rng(0)
    centres = [lesion_centre(label, rng) for _ in range(2000)]
    on_small = sum(centre == (30, 30) for centre in centres) / len(centres)
    assert 0.45 < on_small < 0.55  # by voxels it would be 1/325
    assert all(label[x, y] for x, y in centres)
    with pytest.raises(ValueError, match="the slice shows no lesion"):
        lesion_centre(np.zeros((4, 4), dtype=np.uint8), rng)


def test_the_sampler_keeps_the_balance_when_every_slice_shows_a_lesion():
    """A slab where every slice holds a lesion: the draws follow the lesion weights alone."""
    dataset = SimpleNamespace(
        lesion_items=np.ones(4, dtype=bool), lesion_weights=np.array([0.25, 0.25, 0.25, 1.25])
    )
    weights = lesion_sampler(dataset, 0.5).weights.numpy()
    np.testing.assert_allclose(weights, [0.125, 0.125, 0.125, 0.625])
