"""RT Structure Set written with pydicom: one ROI per lesion, then the regions ET, TC and WT.

Geometry: every contour lies on one slice ``k`` of the reference series; its points are voxel coordinates
``(i, j, k)`` from :func:`bmcore.dicom.contours.mask_contours` taken to patient LPS millimetres through
the NIfTI affine (:meth:`bmcore.dicom.geometry.SeriesGeometry.to_patient`, the same mapping that gave
the slice its Image Position and Orientation), and its Contour Image Sequence names that slice's SOP
instance. Holes are keyholes (see :mod:`bmcore.dicom.contours`). ROI numbers and names follow the lesion
table (:mod:`bmcore.dicom.structures`); a structure without voxels (the regions of a study without
lesions, or ET when no voxel enhances) is an ROI with no contours. Written in Implicit VR Little Endian,
the transfer syntax every DICOM reader supports and one whose 4-byte lengths never limit Contour Data.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import RTStructureSetStorage, generate_uid

from bmcore.dicom.contours import mask_contours
from bmcore.dicom.geometry import ds
from bmcore.dicom.instance import add_equipment, add_patient_and_study, new_instance
from bmcore.dicom.reference import ReferenceSeries
from bmcore.dicom.structures import Structure

# What RT Referenced Study items name as their class, by long-standing practice (Detached Study Management).
STUDY_REFERENCE_CLASS = "1.2.840.10008.3.1.2.3.1"
CONTOUR_DECIMALS = 4  # 0.1 µm: far below any voxel, keeps Contour Data compact


def _image_reference(reference: ReferenceSeries, k: int) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = reference.sop_class_uid
    item.ReferencedSOPInstanceUID = reference.sop_instance_uids[k]
    return item


def _referenced_frame(reference: ReferenceSeries) -> Dataset:
    """The Referenced Frame of Reference Sequence item: the study, the series and every slice of it."""
    series = Dataset()
    series.SeriesInstanceUID = reference.series_instance_uid
    series.ContourImageSequence = Sequence(
        [_image_reference(reference, k) for k in range(len(reference.sop_instance_uids))]
    )
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_REFERENCE_CLASS
    study.ReferencedSOPInstanceUID = reference.study_instance_uid
    study.RTReferencedSeriesSequence = Sequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = reference.frame_of_reference_uid
    frame.RTReferencedStudySequence = Sequence([study])
    return frame


def _roi_contour(reference: ReferenceSeries, structure: Structure) -> Dataset:
    """The ROI Contour Sequence item of one structure: its contours slice by slice, in patient LPS mm."""
    item = Dataset()
    item.ReferencedROINumber = structure.number
    item.ROIDisplayColor = list(structure.color)
    contours = []
    origin = tuple(s.start for s in structure.box)
    for number, (k, voxels) in enumerate(mask_contours(structure.voxels, origin), start=1):
        contour = Dataset()
        contour.ContourImageSequence = Sequence([_image_reference(reference, k)])
        contour.ContourGeometricType = "CLOSED_PLANAR"
        contour.NumberOfContourPoints = len(voxels)
        contour.ContourNumber = number
        contour.ContourData = ds(np.round(reference.geometry.to_patient(voxels), CONTOUR_DECIMALS))
        contours.append(contour)
    if contours:
        item.ContourSequence = Sequence(contours)
    return item


def _roi(reference: ReferenceSeries, structure: Structure) -> Dataset:
    item = Dataset()
    item.ROINumber = structure.number
    item.ReferencedFrameOfReferenceUID = reference.frame_of_reference_uid
    item.ROIName = structure.name
    item.ROIDescription = structure.description
    item.ROIGenerationAlgorithm = "AUTOMATIC"
    item.ROIGenerationDescription = "bmseg segmentation"
    return item


def _observation(structure: Structure) -> Dataset:
    item = Dataset()
    item.ObservationNumber = structure.number
    item.ReferencedROINumber = structure.number
    item.ROIObservationLabel = structure.name[:16]
    item.ROIObservationDescription = structure.description
    # Lesions and the tumour regions are gross tumour; WT includes oedema, so no interpretation is claimed.
    item.RTROIInterpretedType = "" if structure.name == "WT" else "GTV"
    item.ROIInterpreter = ""
    return item


def build_rtstruct(reference: ReferenceSeries, items: list[Structure], series_number: int = 902) -> Dataset:
    """The RT Structure Set of ``items`` on ``reference`` (in its study and frame of reference)."""
    rtstruct = new_instance(RTStructureSetStorage, generate_uid(), implicit_vr=True)
    add_patient_and_study(rtstruct, reference.pseudonym, reference.study_instance_uid)
    add_equipment(rtstruct)
    rtstruct.Modality = "RTSTRUCT"
    rtstruct.SeriesInstanceUID = generate_uid()
    rtstruct.SeriesNumber = series_number
    rtstruct.SeriesDescription = "bmseg lesions and regions"
    rtstruct.OperatorsName = ""
    rtstruct.FrameOfReferenceUID = reference.frame_of_reference_uid
    rtstruct.PositionReferenceIndicator = ""
    rtstruct.InstanceNumber = 1
    now = dt.datetime.now()
    rtstruct.StructureSetLabel = "bmseg"
    rtstruct.StructureSetName = "bmseg segmentation"
    rtstruct.StructureSetDescription = "Brain metastases: one ROI per lesion, then ET, TC, WT"
    rtstruct.StructureSetDate, rtstruct.StructureSetTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    rtstruct.ReferencedFrameOfReferenceSequence = Sequence([_referenced_frame(reference)])
    rtstruct.StructureSetROISequence = Sequence([_roi(reference, s) for s in items])
    rtstruct.ROIContourSequence = Sequence([_roi_contour(reference, s) for s in items])
    rtstruct.RTROIObservationsSequence = Sequence([_observation(s) for s in items])
    return rtstruct
