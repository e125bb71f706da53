"""The slice cache serving the recipe options of issue #15: native in-plane grids, crops, 2.5D context.

Every read is compared with the preprocessed volume itself (:func:`preprocess_image` at ``size`` 0, the
native grid), so a crop is shown to hold native pixels, not resized ones.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bmcore import imaging
from bmcore.data.augment import augment_slice
from bmcore.data.dataset import SliceDataset, class_voxel_counts, crop_start, lesion_sampler, prepare_case
from bmcore.data.lesion_balance import slice_weights
from bmcore.data.preprocess import context_stack, preprocess_image
from bmcore.training.config import TrainConfig
from bmcore.training.parts import build_loaders

F16 = {"atol": 2e-3, "rtol": 1e-3}  # float16 on disk


@pytest.fixture(scope="module")
def native(brats_cohort, tmp_path_factory):
    """Every BraTS study cached at its native in-plane grid: (refs, cases, preprocessed (image, label))."""
    cache = tmp_path_factory.mktemp("native-cache")
    refs = imaging.find_studies(brats_cohort)
    cases = [prepare_case(ref, cache, size=0) for ref in refs]
    volumes = [imaging.load_study(ref) for ref in refs]
    arrays = [(preprocess_image(v.image, 0)[0], v.label) for v in volumes]
    return refs, cases, volumes, arrays


def test_a_native_cache_keeps_the_grid_and_the_spacing(native):
    refs, cases, volumes, arrays = native
    for case, volume, (image, label) in zip(cases, volumes, arrays, strict=True):
        assert (
            case.size == 0 and case.shape == volume.image.shape[1:3] and case.depth == volume.image.shape[3]
        )
        assert case.spacing == tuple(float(s) for s in volume.spacing)
        x0, x1, y0, y1 = case.brain_box
        inside = np.flatnonzero(np.abs(image).sum(axis=(0, 2, 3)) > 0)
        assert x0 <= inside[0] and inside[-1] < x1 and 0 <= x0 < x1 <= case.shape[0] and y1 <= case.shape[1]
        for z in (0, case.depth // 2, case.depth - 1):
            image_z, label_z = case.read_slice(z)
            np.testing.assert_allclose(image_z, image[..., z], **F16)
            np.testing.assert_array_equal(label_z, label[..., z])
    assert len({case.directory for case in cases}) == len(refs)


def test_context_channels_are_the_neighbouring_slices_zero_beyond_the_volume(native):
    _, cases, _, arrays = native
    case, (image, _) = cases[0], arrays[0]
    k, channels = 2, case.channels
    for z in (0, 1, case.depth // 2, case.depth - 1):
        stacked, _ = case.read(z, context=k)
        assert stacked.shape == ((2 * k + 1) * channels, *case.shape)
        np.testing.assert_allclose(stacked, context_stack(image, [z], k)[0], **F16)
        for offset in range(-k, k + 1):
            block = stacked[(offset + k) * channels : (offset + k + 1) * channels]
            if 0 <= z + offset < case.depth:
                np.testing.assert_allclose(block, image[..., z + offset], **F16)
            else:  # beyond the volume: zeros, the value outside the brain after normalisation
                assert not block.any()
    dataset = SliceDataset(cases, context=1)
    item, _, _ = dataset[0]
    case_index, z = dataset.items[0]
    assert item.shape[0] == 3 * channels
    np.testing.assert_allclose(item[channels : 2 * channels].numpy(), cases[case_index].read_slice(z)[0])


def _expected_window(image: np.ndarray, label: np.ndarray, z: int, window, context: int):
    """The window of the preprocessed volume, zeros beyond it: what a crop must hold."""
    x0, y0, height, width = window
    full = context_stack(image, [z], context)[0]
    padded = np.zeros((full.shape[0], height, width), np.float32)
    padded_label = np.zeros((height, width), np.uint8)
    xs = slice(max(x0, 0), min(x0 + height, full.shape[1]))
    ys = slice(max(y0, 0), min(y0 + width, full.shape[2]))
    target = (slice(xs.start - x0, xs.stop - x0), slice(ys.start - y0, ys.stop - y0))
    padded[:, target[0], target[1]] = full[:, xs, ys]
    padded_label[target] = label[xs, ys, z]
    return padded, padded_label


@pytest.mark.parametrize("crop", [32, 96])  # inside the 64 x 64 slices, and larger than them (padded)
def test_crops_are_native_pixels_and_hold_a_lesion_at_the_asked_rate(native, crop):
    _, cases, _, arrays = native
    dataset = SliceDataset(cases, crop=crop, context=1, seed=4)
    fraction, draws = 0.7, 400
    has_lesion = []
    for index in lesion_sampler(dataset, fraction, num_samples=draws, seed=2):
        image, label, _ = dataset[index]
        assert image.shape == (3 * 4, crop, crop) and label.shape == (crop, crop)
        has_lesion.append(bool((label > 0).any()))
        assert has_lesion[-1] == dataset.lesion_items[index]  # a lesion slice's crop is on one of its voxels
    assert abs(np.mean(has_lesion) - fraction) < 0.07
    rng = np.random.default_rng(0)
    for index in range(0, len(dataset), 7):
        case_index, z = dataset.items[index]
        window = dataset.crop_window(index, rng)
        image, label = cases[case_index].read(z, 1, window)
        expected, expected_label = _expected_window(*arrays[case_index], z, window, 1)
        np.testing.assert_allclose(image, expected, **F16)
        np.testing.assert_array_equal(label, expected_label)
        x0, x1, y0, y1 = cases[case_index].brain_box  # every crop overlaps the brain's bounding box
        assert window[0] < x1 and window[0] + crop > x0 and window[1] < y1 and window[1] + crop > y0


def test_crop_windows_stay_inside_the_slice_where_they_fit():
    assert [crop_start(c, 32, 64) for c in (0, 10, 16, 40, 63)] == [0, 0, 0, 24, 32]
    assert crop_start(5, 96, 64) == -16  # larger than the slice: centred, padded on both sides


def test_whole_native_slices_are_padded_to_the_model_multiple(native):
    _, cases, _, arrays = native
    dataset = SliceDataset(cases, multiple=48)
    assert dataset.pad_shape == (96, 96)
    image, label, _ = dataset[3]
    case_index, z = dataset.items[3]
    assert image.shape == (4, 96, 96) and label.shape == (96, 96)
    np.testing.assert_allclose(image[:, :64, :64].numpy(), arrays[case_index][0][..., z], **F16)
    assert not image[:, 64:].any() and not image[:, :, 64:].any() and not label[64:].any()


def test_intensity_augmentation_treats_every_slice_of_a_modality_alike():
    base = np.stack([np.full((48, 48), v, np.float32) for v in (1.0, 2.0)])  # 2 modalities
    image = np.concatenate([base] * 3)  # context 1: 3 slices x 2 modalities, slice-major
    label = np.zeros((48, 48), np.uint8)
    for seed in range(20):
        out, _ = augment_slice(image.copy(), label, np.random.default_rng(seed), modalities=2)
        means = out.reshape(3, 2, -1).mean(axis=2)
        np.testing.assert_allclose(means, np.broadcast_to(means[1], means.shape), atol=0.01)


def test_class_voxel_counts_are_the_training_slices_labels(native):
    _, cases, _, arrays = native
    expected = np.zeros(4, np.int64)
    for case, (_, label) in zip(cases, arrays, strict=True):
        expected += np.bincount(label[..., list(case.brain_slices)].ravel(), minlength=4)
    np.testing.assert_array_equal(class_voxel_counts(cases), expected)
    assert expected[1:].sum() > 0


def test_lesion_balance_draws_every_lesion_alike_and_crops_on_one(native):
    """With lesion balance the sampler's weight of each lesion slice is its share of the lesions it shows
    (one per 3D lesion, spread over its slices); without, every lesion slice weighs the same."""
    _, cases, _, arrays = native
    balanced, plain = SliceDataset(cases, crop=32, lesion_balance=True), SliceDataset(cases, crop=32)
    for case_index, (_, label) in enumerate(arrays):
        expected = slice_weights(label)
        for index, (i, z) in enumerate(balanced.items):
            if i == case_index:
                assert balanced.lesion_weights[index] == pytest.approx(expected[z])
    assert (balanced.lesion_weights > 0).tolist() == balanced.lesion_items.tolist()
    assert set(plain.lesion_weights[plain.lesion_items]) == {1.0}
    sampler = lesion_sampler(balanced, 0.6)
    weights = sampler.weights.numpy()
    lesion = balanced.lesion_items
    np.testing.assert_allclose(weights[lesion].sum(), 0.6)
    np.testing.assert_allclose(
        weights[lesion] / weights[lesion].sum(),
        balanced.lesion_weights[lesion] / balanced.lesion_weights[lesion].sum(),
    )
    for index in np.flatnonzero(lesion)[:20]:
        _, label, _ = balanced[int(index)]
        assert (label > 0).any()  # centred on a lesion of the slice


def test_val_slices_scores_that_many_evenly_spaced_validation_slices(native):
    _, cases, _, _ = native
    config = TrainConfig(depth=2, base_channels=4, val_slices=5, num_workers=0, device="cpu")
    _, val_loader = build_loaders(config, cases[:1], cases[1:], torch.device("cpu"), seed=0)
    total = SliceDataset(cases[1:], context=1, multiple=4)
    assert len(val_loader.dataset) == 5 < len(total)
    picked = val_loader.dataset.indices
    assert picked[0] == 0 and picked[-1] == len(total) - 1 and list(picked) == sorted(set(picked))
    _, every = build_loaders(
        dataclasses.replace(config, val_slices=0), cases[:1], cases[1:], torch.device("cpu"), 0
    )
    assert len(every.dataset) == len(total)
