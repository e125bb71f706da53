"""DICOM-SEG written with highdicom: BINARY, one segment per lesion, then ET, TC and WT.

The segments are those of :mod:`bmcore.dicom.structures` with the same numbers as the RTSTRUCT's ROIs;
lesion segments are disjoint, the region segments overlap them and each other by design. Frame ``k`` of
the source array is slice ``k`` of the reference series (``mask[:, :, k]`` transposed to rows × columns),
so highdicom takes each frame's position, orientation and spacing from that source image and references
its SOP instance. Empty frames are left out; a segment without voxels (ET when nothing enhances) is still
described, with no frames. When every segment is empty (a study without lesions: ET, TC, WT only) all
frames are kept, empty, since a Segmentation must have frames.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from bmcore.dicom.instance import MANUFACTURER, MODEL_NAME, SOFTWARE_VERSION
from bmcore.dicom.reference import ReferenceSeries
from bmcore.dicom.structures import Structure

ALGORITHM = hd.AlgorithmIdentificationSequence(
    name="bmseg", family=codes.cid7162.ArtificialIntelligence, version=SOFTWARE_VERSION
)


def _description(structure: Structure) -> hd.seg.SegmentDescription:
    lesion = structure.kind == "lesion"
    description = hd.seg.SegmentDescription(
        segment_number=structure.number,
        segment_label=structure.name,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.NeoplasmMetastatic if lesion else codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=ALGORITHM,
        tracking_id=structure.name,
        tracking_uid=generate_uid(),
        display_color=hd.color.CIELabColor.from_rgb(*structure.color),
    )
    description.SegmentDescription = structure.description[:64]
    return description


def build_seg(
    reference: ReferenceSeries, items: list[Structure], series_number: int = 903
) -> hd.seg.Segmentation:
    """The Segmentation of ``items`` on the slices of ``reference``."""
    # (slices, rows, columns, segments): frame k, pixel (row j, column i) of segment s = voxel (i, j, k)
    columns, rows, slices = reference.geometry.shape
    stacked = np.zeros((slices, rows, columns, len(items)), dtype=np.uint8)
    for index, structure in enumerate(items):
        i, j, k = structure.box
        stacked[k, j, i, index] = structure.voxels.transpose(2, 1, 0)
    return hd.seg.Segmentation(
        source_images=reference.datasets(),
        pixel_array=stacked,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description(s) for s in items],
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=SOFTWARE_VERSION,
        device_serial_number="none",
        series_description="bmseg lesions and regions",
        content_label="BMSEG",
        content_description="Brain metastases: one segment per lesion, then ET, TC, WT",
        omit_empty_frames=bool(stacked.any()),
    )
