"""The viewer's three planes: a real upload of an anisotropic study stored in a flipped (LPS-like) voxel
order, its slices rendered along each axis in the radiological display convention, at the physical aspect
ratio, with the overlay where the label is; bad planes and slice indices answered 400."""

from __future__ import annotations

import io
import json
import re
from html import unescape

import numpy as np
import pytest
from PIL import Image

from .conftest import nifti_bytes

SHAPE = (32, 24, 10)  # canonical x (left → right), y (posterior → anterior), z (inferior → superior)
SPACING = (1.0, 1.5, 4.0)
BLOB = (slice(24, 30), slice(17, 22), slice(6, 9))  # right, anterior, superior: label 3 (ET, red)
CENTRE = {"sagittal": 27, "coronal": 19, "axial": 7}
AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def stored_flipped(ras: np.ndarray) -> bytes:
    """``ras`` written in the file's own voxel order: x and y reversed, as an LPS scanner stores them; the
    affine says so, so the canonical (RAS) volume the viewer loads is ``ras`` again."""
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    affine[:3, 3] = [(SHAPE[0] - 1) * SPACING[0], (SHAPE[1] - 1) * SPACING[1], 0.0]
    return nifti_bytes(ras[::-1, ::-1, :].copy(), affine)


@pytest.fixture
def planar_study(upload) -> dict:
    rng = np.random.default_rng(3)
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[BLOB] = 3
    files = {
        field: stored_flipped(
            (100.0 + 20 * i + rng.normal(0, 2, SHAPE) + 80.0 * (label > 0)).astype(np.float32)
        )
        for i, field in enumerate(("t1", "t1ce", "t2", "flair"))
    }
    files["seg"] = stored_flipped(label)
    response = upload(files, patient_id="PLANES1", study_uid="PLANES1A")
    assert response.status_code == 201, response.json
    return response.json


def expected_size(plane: str) -> tuple[int, int]:
    """(width, height): the plane's two in-plane axes in mm, the longer one 512 pixels."""
    across, down = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}[plane]
    width_mm, height_mm = SHAPE[across] * SPACING[across], SHAPE[down] * SPACING[down]
    scale = 512 / max(width_mm, height_mm)
    return round(width_mm * scale), round(height_mm * scale)


def png(response) -> np.ndarray:
    assert response.status_code == 200, response.data[:300]
    assert response.mimetype == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.data)).convert("RGB")).astype(int)


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_each_plane_is_drawn_at_its_physical_size_in_the_radiological_convention(
    signed_in, planar_study, plane
):
    base = f"/studies/{planar_study['id']}/slice.png?modality=t1ce&plane={plane}"
    image = png(signed_in.get(f"{base}&index={CENTRE[plane]}&overlay=label&opacity=1"))
    height, width, _ = image.shape
    assert (width, height) == expected_size(plane)
    assert len({expected_size(p) for p in AXIS}) == 3  # the three planes really differ in shape

    red = (image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] < 60)
    rows, columns = np.nonzero(red)
    assert rows.size > 0
    # Right-anterior-superior blob: the top-left of every plane (axial: A up, R left; coronal: S up,
    # R left; sagittal: S up, A left).
    assert rows.max() < height / 2 and columns.max() < width / 2, (rows.min(), rows.max(), columns.max())
    # Its extent is the blob's in mm: the pixel scale is the same along both axes.
    across, down = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}[plane]
    scale = width / (SHAPE[across] * SPACING[across])
    blob_mm = [(BLOB[axis].stop - BLOB[axis].start) * SPACING[axis] for axis in (across, down)]
    assert abs((columns.max() - columns.min() + 1) - blob_mm[0] * scale) <= 2
    assert abs((rows.max() - rows.min() + 1) - blob_mm[1] * scale) <= 2

    plain = png(signed_in.get(f"{base}&index={CENTRE[plane]}&overlay=none"))
    assert (plain[..., 0] == plain[..., 1]).all()
    # A slice outside the blob carries no overlay in that plane.
    outside = png(signed_in.get(f"{base}&index=0&overlay=label&opacity=1"))
    assert not ((outside[..., 0] > 200) & (outside[..., 1] < 60)).any()


def test_slice_index_range_follows_the_plane(signed_in, planar_study):
    base = f"/studies/{planar_study['id']}/slice.png?modality=flair&overlay=none"
    for plane, axis in AXIS.items():
        last = SHAPE[axis] - 1
        assert png(signed_in.get(f"{base}&plane={plane}&index={last}")).shape[2] == 3
        for bad in (last + 1, -1):
            response = signed_in.get(f"{base}&plane={plane}&index={bad}")
            assert response.status_code == 400, (plane, bad)
            assert response.json == {"error": f"{plane} slice index must be from 0 to {last}, got {bad}"}
    assert signed_in.get(f"{base}&plane=sagittal&index=20").status_code == 200  # 20 < 32 slices
    assert signed_in.get(f"{base}&plane=axial&index=20").status_code == 400  # only 10 axial slices
    unknown = signed_in.get(f"{base}&plane=oblique&index=0")
    assert unknown.status_code == 400 and "plane one of axial, coronal, sagittal" in unknown.json["error"]
    assert signed_in.get(f"{base}&plane=axial&index=two").status_code == 400
    assert png(signed_in.get(f"{base}&z=3")).shape[:2] == expected_size("axial")[::-1]  # older links


def test_study_page_offers_the_three_planes(signed_in, planar_study):
    text = signed_in.get(f"/studies/{planar_study['id']}").text
    buttons = re.findall(r'<button type="button" data-value="(\w+)"[^>]*>(\w+)</button>', text)
    assert [b for b in buttons if b[0] in AXIS] == [
        ("axial", "Axial"),
        ("coronal", "Coronal"),
        ("sagittal", "Sagittal"),
    ]
    planes = json.loads(unescape(re.search(r"data-planes='([^']+)'", text).group(1)))
    assert {plane: view["count"] for plane, view in planes.items()} == {
        plane: SHAPE[axis] for plane, axis in AXIS.items()
    }
    for plane, axis in AXIS.items():  # each plane opens on the slice with the most label
        assert BLOB[axis].start <= planes[plane]["start"] < BLOB[axis].stop, plane
    assert planes["sagittal"]["orient"] == ["S", "I", "A", "P"]
    assert f"plane=axial&amp;index={planes['axial']['start']}" in text
    assert '<span class="orient a" id="orient-top">A</span>' in text


def test_lesion_rows_know_their_slice_in_every_plane(signed_in, stored_study, fake_segment, users):
    fake_segment(stored_study["id"], users.alice.id)
    text = signed_in.get(f"/studies/{stored_study['id']}").text
    centres = json.loads(unescape(re.search(r"data-lesions='([^']+)'", text).group(1)))
    rows = re.findall(r'<tr class="lesion-row" data-lesion="(\d+)" data-z="(\d+)"', text)
    assert rows and {lesion for lesion, _ in rows} == set(centres)
    for lesion, z in rows:
        assert centres[lesion][2] == int(z) and len(centres[lesion]) == 3
