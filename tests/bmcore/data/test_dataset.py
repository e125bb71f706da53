"""Tests of bmcore.data.dataset and augment: the on-disk slice cache, the slice dataset, sampling, loaders."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bmcore import imaging
from bmcore.data.augment import augment_slice, flip, rotate
from bmcore.data.dataset import SliceDataset, content_key, lesion_sampler, prepare_case
from bmcore.data.preprocess import preprocess_image, resize_label

SIZE = 64


@pytest.fixture(scope="module")
def cached(ucsf_cohort, tmp_path_factory):
    """Every UCSF study prepared into one cache: (cache folder, refs, cases)."""
    cache = tmp_path_factory.mktemp("cache")
    refs = imaging.find_studies(ucsf_cohort)
    return cache, refs, [prepare_case(ref, cache, size=SIZE) for ref in refs]


def test_prepare_case_caches_once(cached):
    cache, refs, cases = cached
    files = sorted(p for p in cases[0].directory.iterdir())
    assert [p.name for p in files] == ["image.f16", "label.u8", "meta.json"]
    before = {p.name: p.stat().st_mtime_ns for p in files}
    again = prepare_case(refs[0], cache, size=SIZE)
    assert again == cases[0]
    assert {p.name: p.stat().st_mtime_ns for p in files} == before
    assert len([p for p in cache.iterdir()]) == len(refs)  # one folder a study, no temp folders left


def test_cache_key_follows_content_and_identity(ucsf_cohort, tmp_path):
    source = sorted(p for p in ucsf_cohort.iterdir() if p.is_dir())[0]
    study = tmp_path / source.name
    shutil.copytree(source, study)
    ref = imaging.study_from_dir(study)
    key = content_key(ref, imaging.MODALITIES, SIZE, 5.0)
    assert content_key(ref, imaging.MODALITIES, SIZE, 5.0) == key
    assert content_key(ref, imaging.MODALITIES, 128, 5.0) != key
    assert content_key(ref, ("t1ce", "flair"), SIZE, 5.0) != key
    # the same files under another study id (a copied visit) must not share the cached meta
    twin = tmp_path / "twin" / ref.study_id.replace("A", "B")
    twin.mkdir(parents=True)
    for path in study.iterdir():
        shutil.copy(path, twin / path.name.replace(ref.study_id, twin.name))
    twin_ref = imaging.study_from_dir(twin)
    assert content_key(twin_ref, imaging.MODALITIES, SIZE, 5.0) != key
    assert prepare_case(twin_ref, tmp_path / "cache", size=SIZE).study_id == twin.name
    assert prepare_case(ref, tmp_path / "cache", size=SIZE).study_id == ref.study_id
    # changed voxels, same file name → new key
    flair = ref.images["flair"]
    data = np.asarray(nib.load(flair).dataobj)
    data[10, 10, 10] += 1
    nib.save(nib.Nifti1Image(data, nib.load(flair).affine), flair)
    assert content_key(ref, imaging.MODALITIES, SIZE, 5.0) != key


def test_slices_read_back_the_preprocessed_arrays(cached):
    _, refs, cases = cached
    volume = imaging.load_study(refs[0])
    image, mask = preprocess_image(volume.image, SIZE)
    label = resize_label(volume.label, SIZE)
    case = cases[0]
    assert (case.channels, case.size, case.depth) == (4, SIZE, image.shape[3])
    assert case.brain_slices == tuple(np.flatnonzero(mask.any(axis=(0, 1))).tolist())
    assert case.lesion_slices == tuple(np.flatnonzero((label > 0).any(axis=(0, 1))).tolist())
    for z in (0, case.depth // 2, case.depth - 1):
        image_z, label_z = case.read_slice(z)
        assert image_z.dtype == np.float32 and image_z.shape == (4, SIZE, SIZE)
        np.testing.assert_allclose(image_z, image[..., z], atol=5e-3, rtol=1e-3)  # float16 on disk
        np.testing.assert_array_equal(label_z, label[..., z])


def test_slice_dataset_covers_brain_slices_with_partial_flags(cached):
    _, refs, cases = cached
    dataset = SliceDataset(cases)
    assert len(dataset) == sum(len(c.brain_slices) for c in cases)
    assert dataset.lesion_items.sum() == sum(len(set(c.lesion_slices) & set(c.brain_slices)) for c in cases)
    first_of = {}
    for index, (case_index, _) in enumerate(dataset.items):
        first_of.setdefault(case_index, index)
    for case_index, ref in enumerate(refs):
        image, label, partial = dataset[first_of[case_index]]
        assert image.shape == (4, SIZE, SIZE) and label.dtype == torch.int64
        assert bool(partial) == (ref.label_kind == "enhancing") == cases[case_index].partial
        if partial:
            assert set(torch.unique(label).tolist()) <= {0, 3}
    assert {c.partial for c in cases} == {True, False}


def test_unlabelled_cases_are_refused(cached, tmp_path):
    _, refs, _ = cached
    ref = refs[0]
    unlabelled = imaging.StudyRef(
        ref.study_id, ref.patient_id, ref.layout, ref.images, directory=ref.directory
    )
    case = prepare_case(unlabelled, tmp_path, size=SIZE)
    assert not case.has_label and case.read_slice(0)[1] is None
    with pytest.raises(ValueError, match="without labels"):
        SliceDataset([case])


def test_lesion_sampler_draws_the_asked_fraction(cached):
    _, _, cases = cached
    dataset = SliceDataset(cases)
    natural = dataset.lesion_items.mean()
    assert 0.05 < natural < 0.6
    for fraction in (0.5, 0.8):
        drawn = np.fromiter(lesion_sampler(dataset, fraction, num_samples=4000, seed=1), dtype=np.int64)
        assert abs(dataset.lesion_items[drawn].mean() - fraction) <= 0.1
    again = list(lesion_sampler(dataset, 0.5, num_samples=100, seed=1))
    assert again == list(lesion_sampler(dataset, 0.5, num_samples=100, seed=1))
    with pytest.raises(ValueError, match="within"):
        lesion_sampler(dataset, 1.5)


def test_dataloader_with_two_workers(cached):
    _, _, cases = cached
    dataset = SliceDataset(cases, augment=True, seed=3)
    loader = DataLoader(
        dataset, batch_size=16, num_workers=2, sampler=lesion_sampler(dataset, 0.5, num_samples=64, seed=0)
    )
    batches = list(loader)
    assert len(batches) == 4
    for images, labels, partial in batches:
        assert images.shape == (16, 4, SIZE, SIZE) and images.dtype == torch.float32
        assert labels.shape == (16, SIZE, SIZE) and labels.dtype == torch.int64
        assert set(torch.unique(labels).tolist()) <= {0, 1, 2, 3}
        assert partial.dtype == torch.bool and partial.shape == (16,)
        assert torch.isfinite(images).all()


def test_augmentation_keeps_shapes_and_labels():
    rng = np.random.default_rng(0)
    label = np.zeros((48, 48), np.uint8)
    label[10:20, 12:30] = 2
    label[14:18, 16:22] = 3
    label[15, 17] = 1
    image = np.stack([label.astype(np.float32), rng.normal(size=(48, 48)).astype(np.float32)])
    for _ in range(50):
        out_image, out_label = augment_slice(image.copy(), label.copy(), rng)
        assert out_image.shape == image.shape and out_image.dtype == np.float32
        assert out_label.shape == label.shape
        assert set(np.unique(out_label).tolist()) <= {0, 1, 2, 3}
    flipped_image, flipped_label = flip(image, label)  # geometry moves image and label together
    np.testing.assert_array_equal(flipped_image[0], flipped_label.astype(np.float32))
    rotated_image, rotated_label = rotate(image, label, 7.0)
    agree = np.isclose(rotated_image[0], rotated_label, atol=0.5)
    assert agree.mean() > 0.97
