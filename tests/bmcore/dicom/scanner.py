"""A test-side MR scanner: DICOM series written with plain pydicom from numpy volumes.

It shares nothing with bmseg's DICOM code (no ``bmcore.dicom`` import): the geometry is worked out here
from the DICOM standard's own equation (PS3.3 C.7.6.2.1.1): the centre of the pixel in column ``c``, row
``r`` of a slice is ``ImagePositionPatient + c * PixelSpacing[1] * row_direction + r * PixelSpacing[0] *
column_direction`` (LPS), the row direction being the first three ImageOrientationPatient values. A
volume ``data[i, j, k]`` with a RAS affine becomes slice ``k`` with column ``i`` and row ``j``.

Files get scanner-style attributes, fake patient data (:data:`PHI`: no output of bmseg may contain it),
uninformative names (``IM0001``…) in nested folders, and a shuffled order; :func:`zip_folder` packs a
folder (without a DICOMDIR unless :func:`write_directory_record` added one).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    MediaStorageDirectoryStorage,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-5551234",
    "PatientBirthDate": "19610203",
    "AccessionNumber": "ACC77812345",
    "InstitutionName": "St Elsewhere General",
    "ReferringPhysicianName": "Welby^Marcus",
    "OperatorsName": "Tech^Terry",
}
PHI_BYTES = [v.encode() for v in PHI.values()] + [b"Doe", b"5551234"]
RAS_LPS = np.array([-1.0, -1.0, 1.0])
SHAPE = (20, 18, 10)
SPACING = (9.0, 10.0, 13.0)
AXIAL = ((1, 0, 0), (0, 1, 0))  # row, column directions (LPS): i to the left, j to the back


@dataclass
class SeriesSpec:
    """One series to write: real values ``volume[i, j, k]`` on a RAS ``affine``, and its sequence."""

    number: int
    description: str
    volume: np.ndarray
    affine: np.ndarray
    echo_time: float = 2.3
    repetition_time: float = 2000.0
    inversion_time: float | None = None
    sequence: tuple[str, str] = ("GR", "SP")
    contrast_agent: str | None = None
    slope: float = 1.0
    intercept: float = 0.0
    transfer_syntax: str = ExplicitVRLittleEndian
    sop_class: str = MRImageStorage
    modality: str = "MR"
    frame_of_reference: str | None = None  # None: the study's
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND", "NORM")
    uid: str = field(default_factory=generate_uid)


@dataclass(frozen=True)
class WrittenSlice:
    """What the scanner wrote for one slice, in DICOM terms."""

    path: Path
    sop_instance_uid: str
    position: np.ndarray  # ImagePositionPatient (LPS)
    row_direction: np.ndarray
    column_direction: np.ndarray
    pixel_spacing: tuple[float, float]  # between rows, between columns
    stored: np.ndarray  # the stored pixel values, (rows, columns)
    slope: float
    intercept: float

    def patient_point(self, column: float, row: float) -> np.ndarray:
        """PS3.3 C.7.6.2.1.1: the LPS centre of a pixel."""
        return (
            self.position
            + column * self.pixel_spacing[1] * self.row_direction
            + row * self.pixel_spacing[0] * self.column_direction
        )


@dataclass
class Study:
    study_uid: str = field(default_factory=generate_uid)
    frame_of_reference: str = field(default_factory=generate_uid)
    slices: dict[int, list[WrittenSlice]] = field(default_factory=dict)  # by series number


def affine_for(
    row_lps, column_lps, spacing, centre_ras=(0.0, 0.0, 0.0), shape=(1, 1, 1), k_sign=1.0
) -> np.ndarray:
    """A RAS affine whose i axis runs along ``row_lps``, j along ``column_lps``, k along ±their normal,
    with the grid centred on ``centre_ras``."""
    row = np.asarray(row_lps, float) / np.linalg.norm(row_lps)
    column = np.asarray(column_lps, float) / np.linalg.norm(column_lps)
    normal = np.cross(row, column) * k_sign
    affine = np.eye(4)
    for axis, direction in enumerate((row, column, normal)):
        affine[:3, axis] = direction * RAS_LPS * spacing[axis]
    affine[:3, 3] = np.asarray(centre_ras) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def _common(ds: Dataset, study: Study, spec: SeriesSpec) -> None:
    for keyword, value in PHI.items():
        setattr(ds, keyword, value)
    ds.PatientSex, ds.PatientAge, ds.PatientWeight = "F", "064Y", 71
    ds.StudyInstanceUID, ds.StudyID, ds.StudyDescription = study.study_uid, "1", "MRI HEAD W WO CONTRAST"
    ds.StudyDate, ds.StudyTime, ds.SeriesDate, ds.SeriesTime = "20240312", "081500", "20240312", "083000"
    ds.Manufacturer, ds.ManufacturerModelName, ds.MagneticFieldStrength = "SIEMENS", "Skyra", 3
    ds.SeriesInstanceUID, ds.SeriesNumber = spec.uid, spec.number
    ds.SeriesDescription, ds.ProtocolName = spec.description, spec.description
    ds.Modality, ds.BodyPartExamined, ds.PatientPosition = spec.modality, "BRAIN", "HFS"
    ds.FrameOfReferenceUID = spec.frame_of_reference or study.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.MRAcquisitionType, ds.ScanOptions, ds.EchoTrainLength = "3D", "", 1
    ds.ImageType = list(spec.image_type)
    ds.ScanningSequence, ds.SequenceVariant = spec.sequence
    ds.EchoTime, ds.RepetitionTime, ds.FlipAngle = spec.echo_time, spec.repetition_time, 9
    if spec.inversion_time is not None:
        ds.InversionTime = spec.inversion_time
    if spec.contrast_agent:
        ds.ContrastBolusAgent = spec.contrast_agent


def _pixels(ds: Dataset, stored: np.ndarray, spec: SeriesSpec) -> None:
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = spec.slope, spec.intercept, "US"
    ds.WindowCenter, ds.WindowWidth = 600, 1200
    if spec.transfer_syntax in (JPEGLSLossless, RLELossless):  # pydicom's encoders (pyjpegls, its own RLE)
        ds.compress(spec.transfer_syntax, stored.astype(np.int16))
    elif spec.transfer_syntax == JPEG2000Lossless:  # Pillow's OpenJPEG, reversible
        ds.PixelRepresentation = 0
        ds.PixelData = encapsulate(
            [_pillow(stored.astype(np.uint16), "JPEG2000", irreversible=False, no_jp2=True)]
        )
        ds["PixelData"].VR = "OB"
    elif spec.transfer_syntax == JPEGBaseline8Bit:  # Pillow's libjpeg, lossy
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = encapsulate([_pillow(stored.astype(np.uint8), "JPEG", quality=95)])
        ds["PixelData"].VR = "OB"
    elif spec.transfer_syntax == ExplicitVRLittleEndian:
        ds.PixelData = stored.astype("<i2").tobytes()
    else:  # a compressed syntax the test does not encode: opaque fragments under its UID
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3" + stored.astype("<i2").tobytes()[:64] + b"\xff\xd9"])
        ds["PixelData"].VR = "OB"


def _pillow(array: np.ndarray, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format, **options)
    return buffer.getvalue()


def slice_dataset(study: Study, spec: SeriesSpec, k: int) -> tuple[Dataset, WrittenSlice]:
    """Slice ``k`` of a series as a dataset, and the record of what it holds."""
    axes = spec.affine[:3, :3]
    sizes = np.linalg.norm(axes, axis=0)
    row_dir, column_dir = axes[:, 0] / sizes[0] * RAS_LPS, axes[:, 1] / sizes[1] * RAS_LPS
    position = (spec.affine @ [0, 0, k, 1])[:3] * RAS_LPS
    stored = np.round((spec.volume[:, :, k].T - spec.intercept) / spec.slope).astype(np.int16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = spec.transfer_syntax
    ds.SOPClassUID, ds.SOPInstanceUID = spec.sop_class, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = (
        ds.SOPClassUID,
        ds.SOPInstanceUID,
    )
    _common(ds, study, spec)
    ds.InstanceNumber, ds.AcquisitionNumber = k + 1, 1
    ds.ImagePositionPatient = [round(float(v), 6) for v in position]
    ds.ImageOrientationPatient = [round(float(v), 8) for v in (*row_dir, *column_dir)]
    ds.PixelSpacing = [round(float(sizes[1]), 6), round(float(sizes[0]), 6)]
    ds.SliceThickness = ds.SpacingBetweenSlices = round(float(sizes[2]), 6)
    ds.SliceLocation = round(float(position @ np.cross(row_dir, column_dir)), 6)
    _pixels(ds, stored, spec)
    record = WrittenSlice(
        path=Path(),
        sop_instance_uid=ds.SOPInstanceUID,
        position=np.asarray(ds.ImagePositionPatient, float),
        row_direction=np.asarray(ds.ImageOrientationPatient[:3], float),
        column_direction=np.asarray(ds.ImageOrientationPatient[3:], float),
        pixel_spacing=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
        stored=stored,
        slope=spec.slope,
        intercept=spec.intercept,
    )
    return ds, record


def write_study(root: Path, specs: list[SeriesSpec], seed: int = 0, study: Study | None = None) -> Study:
    """Write every series under ``root`` as ``DICOM/<a>/<b>/IM<nnnn>`` in a shuffled order, plus a
    non-DICOM file as exports carry."""
    study = study or Study()
    rng = np.random.default_rng(seed)
    jobs = [(spec, k) for spec in specs for k in range(spec.volume.shape[2])]
    order = rng.permutation(len(jobs))
    for index, job in enumerate(order, start=1):
        spec, k = jobs[job]
        ds, record = slice_dataset(study, spec, k)
        path = root / "DICOM" / f"{rng.integers(0, 3):04d}" / f"{rng.integers(0, 2):04d}" / f"IM{index:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        study.slices.setdefault(spec.number, []).append(_with_path(record, path))
    (root / "DICOM" / "VERSION").write_text("exported by a PACS viewer\n")
    return study


def write_directory_record(root: Path) -> Path:
    """A DICOMDIR-like file (Media Storage Directory SOP class, no series) as media exports carry."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.FileSetID, ds.PatientName = "EXPORT", PHI["PatientName"]
    ds.save_as(root / "DICOMDIR", enforce_file_format=True)
    return root / "DICOMDIR"


def _with_path(record: WrittenSlice, path: Path) -> WrittenSlice:
    return WrittenSlice(path, *(getattr(record, f) for f in list(WrittenSlice.__dataclass_fields__)[1:]))


def zip_folder(folder: Path, target: Path) -> Path:
    """A zip of ``folder``'s files (names relative to it), no DICOMDIR."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return target


def four_series(volumes, affine, changes: dict[int, dict] | None = None) -> list[SeriesSpec]:
    """t1 (3), t2 (5), flair (7) and t1ce (9) as a Siemens scanner names them, all on ``affine``;
    ``changes`` maps a series number to SeriesSpec fields to replace."""
    specs = {
        3: SeriesSpec(
            3, "t1_mprage_sag_p2_iso", volumes["t1"], affine, 2.3, 2000, 900, ("GR\\IR", "SK\\SP\\MP")
        ),
        5: SeriesSpec(5, "t2_tse_tra", volumes["t2"], affine, 96, 5000, None, ("SE", "SK\\SP")),
        7: SeriesSpec(
            7, "t2_tirm_tra_dark-fluid", volumes["flair"], affine, 85, 9000, 2500, ("SE\\IR", "SK\\SP\\MP")
        ),
        9: SeriesSpec(
            9,
            "T1 MPRAGE POST GD",
            volumes["t1ce"],
            affine,
            2.3,
            2000,
            900,
            ("GR\\IR", "SK\\SP\\MP"),
            contrast_agent="GADOBUTROL",
            slope=0.5,
            intercept=-10.0,
        ),
    }
    for number, fields in (changes or {}).items():
        for name, value in fields.items():
            setattr(specs[number], name, value)
    return list(specs.values())


def axial_affine(shape=SHAPE, spacing=SPACING) -> np.ndarray:
    return affine_for(*AXIAL, spacing, centre_ras=(2.0, -5.0, 10.0), shape=shape)
