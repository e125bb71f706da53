"""The cohort at a glance: a JSON summary and PNG plots of a set of studies (``bmseg cohort``, ``/cohort``).

Torch-free (the web imports it); matplotlib is used through ``Figure`` objects only (no pyplot state),
so plots can be drawn in a threaded web server.

What is counted
---------------
* patients, studies, visits per patient; primary cancer types (from ``cohort.json`` of a synthetic
  cohort, or from the database's ``Patient.primary_cancer``), against the reference study's proportions
  :data:`STUDY_PRIMARY_CANCER_SHARES`;
* lesions per study and lesion diameters: a lesion is a 26-connected tumour-core component
  (:func:`bmcore.metrics.find_lesions`), the diameter that of the sphere of equal volume;
* the patient-level split (:func:`bmcore.data.split.split_studies`, or a split handed in);
* the per-class voxel distribution (NETC, SNFH, ET as shares of tumour voxels) of the labels, and of the
  predicted masks when they are given, against the study's reported predicted shares
  :data:`STUDY_PREDICTED_CLASS_SHARES`. Enhancing-only labels (UCSF-BMSR ``_seg``) count for lesions but
  not for the class distribution, which they would skew towards ET.

Only label files are read (through :mod:`bmcore.imaging`, in the file's own voxel order: components and voxel
counts do not depend on orientation); the images of one study are loaded for the modality sample slices.

The reference figures are the study's as published (its "other" is 15.8 %; the synthetic generator draws
with 15.9 % so that its five shares sum to one).

``bmseg cohort DIR`` runs :func:`write_cohort_report` on a data folder; the web's ``/cohort`` runs
:func:`database_report` on the database's studies and caches it under ``settings.cache_dir / "cohort"``.

Modules: :mod:`~.records` (label files → per-study records), :mod:`~.summary` (the summary and its text
form), :mod:`~.plots`, :mod:`~.report` (writing a report folder), :mod:`~.database` (database studies,
cached). Their public names are re-exported here.
"""

from __future__ import annotations

from bmcore.reports.cohort.database import (
    KEEP_PATIENT_PLOTS,
    KEEP_REPORTS,
    cached_study_lesions,
    database_report,
    prune_cache,
    sort_visits,
    study_ref,
    visit_label,
)
from bmcore.reports.cohort.plots import PLOT_TITLES, PLOTS, plot_lesion_volumes
from bmcore.reports.cohort.records import (
    CACHE_VERSION,
    CLASSES,
    load_primary_cancers,
    read_label,
    study_lesions,
)
from bmcore.reports.cohort.report import (
    write_cohort_report,
    write_plots,
    write_report,
    write_report_atomically,
)
from bmcore.reports.cohort.summary import (
    STUDY_PREDICTED_CLASS_SHARES,
    STUDY_PRIMARY_CANCER_SHARES,
    UNKNOWN,
    format_table,
    summarize_cohort,
    summarize_studies,
)

__all__ = [
    "CACHE_VERSION",
    "CLASSES",
    "KEEP_PATIENT_PLOTS",
    "KEEP_REPORTS",
    "PLOTS",
    "PLOT_TITLES",
    "STUDY_PREDICTED_CLASS_SHARES",
    "STUDY_PRIMARY_CANCER_SHARES",
    "UNKNOWN",
    "cached_study_lesions",
    "database_report",
    "format_table",
    "load_primary_cancers",
    "plot_lesion_volumes",
    "prune_cache",
    "read_label",
    "sort_visits",
    "study_lesions",
    "study_ref",
    "summarize_cohort",
    "summarize_studies",
    "visit_label",
    "write_cohort_report",
    "write_plots",
    "write_report",
    "write_report_atomically",
]
