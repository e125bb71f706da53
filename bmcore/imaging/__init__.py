"""Reading and writing studies: the one I/O boundary, the only package that imports nibabel.

Axis order and geometry
-----------------------
Files are read as nibabel gives them, ``(i, j, k)`` voxel axes with the file's affine. For processing,
every volume is reoriented to the closest canonical **RAS** orientation (pure axis flips and
permutations, no resampling), so the last axis is always inferior→superior and an axial slice is
``array[..., z]``. :class:`Volume` keeps the native affine, shape and orientation, and
:func:`save_mask` undoes the reorientation exactly, so a written mask has the input's shape and affine.
``spacing`` is given in the canonical axis order, in millimetres, and comes from the affine (the voxel
sizes every other use of the geometry sees), not from ``pixdim``, which an sform-only file may leave stale.

Modules: :mod:`.layouts` (finding studies: folder layouts, manifests, :class:`StudyRef`),
:mod:`.nifti` (reading and writing NIfTI files), :mod:`.sanitize` (storing an upload without
extensions or free text, checked in bounded memory), :mod:`.volume` (loading and validating a
study as a :class:`Volume`, writing a mask back to its grid), :mod:`.display` (display windowing). Their
public names are re-exported here: ``from bmcore import imaging; imaging.load_study(...)``.

Layouts (docs/design.md §3)
----------------------
* UCSF-BMSR: ``<root>/<ID>/<ID>_{T1pre,T1post,T2Synth,FLAIR}.nii.gz``; labels ``<ID>_BraTS-seg`` (1/2/3)
  preferred over ``<ID>_seg`` (0/1 enhancing, mapped 1 → 3). Patient = first 6 digits of ``<ID>``.
* BraTS-METS: ``<root>/BraTS-MET-XXXXX-YYY/BraTS-MET-XXXXX-YYY-{t1n,t1c,t2w,t2f,seg}.nii.gz``;
  patient ``XXXXX``.
* CSV manifest: ``patient_id, study_id, t1, t1ce, t2, flair[, seg][, label_map][, label_kind]``, paths
  relative to the CSV; ``label_map`` like ``"3:1 4:3"`` maps source label values onto bmseg's.
"""

from bmcore.imaging.layouts import (
    BRATS_ID,
    BRATS_SUFFIX,
    LABEL_VALUES,
    MODALITIES,
    UCSF_ID,
    UCSF_SUFFIX,
    LabelKind,
    StudyError,
    StudyRef,
    find_studies,
    parse_label_map,
    read_manifest,
    study_from_dir,
)
from bmcore.imaging.nifti import (
    FREE_TEXT_FIELDS,
    clear_free_text,
    file_sha256,
    read_data,
    read_header,
    write_nifti,
)
from bmcore.imaging.sanitize import check_same_geometry, sanitize_nifti_file
from bmcore.imaging.volume import (
    AFFINE_TOLERANCE,
    Volume,
    check_study,
    lesion_voxels,
    load_study,
    save_mask,
    to_canonical_label,
    to_native,
)

__all__ = [
    "AFFINE_TOLERANCE",
    "BRATS_ID",
    "BRATS_SUFFIX",
    "FREE_TEXT_FIELDS",
    "LABEL_VALUES",
    "MODALITIES",
    "UCSF_ID",
    "UCSF_SUFFIX",
    "LabelKind",
    "StudyError",
    "StudyRef",
    "Volume",
    "check_same_geometry",
    "check_study",
    "clear_free_text",
    "file_sha256",
    "find_studies",
    "lesion_voxels",
    "load_study",
    "parse_label_map",
    "read_data",
    "read_header",
    "read_manifest",
    "sanitize_nifti_file",
    "save_mask",
    "study_from_dir",
    "to_canonical_label",
    "to_native",
    "write_nifti",
]
