"""DICOM in and out: MR series imported as a study, segmentations exported as RTSTRUCT and DICOM-SEG.

Torch-free; pydicom and scipy are imported with the package. Every refusal is a :class:`DicomError`
(one line). The voxel-order contract shared by import and export: a NIfTI volume made from (or written
to) a DICOM series has ``data[i, j, k]`` = the pixel at column ``i``, row ``j`` of the ``k``-th slice, slices
sorted along the normal row direction × column direction (increasing), and its affine maps ``(i, j, k)``
to RAS millimetres (DICOM patient coordinates are LPS).

DICOM in: :mod:`.archive` (a folder or a zip, read within :class:`ArchiveLimits`), :mod:`.series`
(headers grouped into series, each series' geometry checked), :mod:`.identify` (which series is t1,
t1ce, t2, flair: a rules table, a user mapping), :mod:`.volume` (pixel data), :mod:`.resample` (onto
the T1 post-contrast grid), :mod:`.importer` (:func:`list_series`, :func:`import_dicom`).

DICOM out: :mod:`.geometry` (a NIfTI grid as DICOM slice planes), :mod:`.instance` (pseudonymous Patient
module, equipment, atomic writes), :mod:`.mr_series` (:func:`write_mr_series`), :mod:`.reference` (the
series the outputs reference: the imported source series or a written one), :mod:`.structures` (an ROI /
segment per lesion, then ET, TC, WT), :mod:`.contours` (contourpy, keyholes), :mod:`.rtstruct`,
:mod:`.seg` (highdicom), :mod:`.outputs` (:func:`write_dicom_outputs`, :func:`zip_series`).
"""

from bmcore.dicom.archive import ArchiveLimits
from bmcore.dicom.errors import DicomError
from bmcore.dicom.identify import DEFAULT_RULES, Rules, load_rules, parse_rules
from bmcore.dicom.importer import (
    SOURCE_RECORD,
    ImportedStudy,
    SeriesInfo,
    check_study_name,
    import_dicom,
    list_series,
)
from bmcore.dicom.mr_series import write_mr_series
from bmcore.dicom.outputs import write_dicom_outputs, zip_series
from bmcore.dicom.placement import parse_mapping
from bmcore.dicom.reference import ReferenceSeries

__all__ = [
    "DEFAULT_RULES",
    "SOURCE_RECORD",
    "ArchiveLimits",
    "DicomError",
    "ImportedStudy",
    "Rules",
    "SeriesInfo",
    "check_study_name",
    "import_dicom",
    "list_series",
    "load_rules",
    "parse_mapping",
    "parse_rules",
    "ReferenceSeries",
    "write_dicom_outputs",
    "write_mr_series",
    "zip_series",
]
