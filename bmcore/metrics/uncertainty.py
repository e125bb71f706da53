"""Uncertainty of a figure averaged over studies: a 95 % bootstrap interval that resamples patients.

Studies of one patient are not independent (follow-up scans of the same metastases), so the unit of
resampling is the patient: each bootstrap sample draws patients with replacement and takes every study
of each drawn patient, and the statistic is the mean over the studies drawn — the same mean over
studies the evaluation summary reports. The interval is ``scipy.stats.bootstrap``'s **percentile**
interval (BCa's jackknife acceleration is unstable, and fails on constant figures, with the handful of
patients a demo has), with a fixed seed so the same cases always give the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 9999
SEED = 0
METHOD = "percentile"


def bootstrap_interval(
    values: Sequence[float | None],
    patients: Sequence[object],
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> list[float] | None:
    """``[low, high]``: the percentile bootstrap interval of the mean over studies, resampling patients.

    ``values[i]`` is study *i*'s figure and ``patients[i]`` its patient. Studies whose value is None
    or NaN (a figure undefined for that study) are left out, as they are of the mean. None when fewer
    than two patients remain: one patient gives no spread to resample.
    """
    if len(values) != len(patients):
        raise ValueError(f"{len(values)} values but {len(patients)} patients")
    numbers = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    keep = np.isfinite(numbers)
    ids, inverse = np.unique(np.asarray([str(p) for p in patients], dtype=object)[keep], return_inverse=True)
    if ids.size < 2:
        return None
    sums = np.bincount(inverse, weights=numbers[keep])
    counts = np.bincount(inverse).astype(np.float64)

    def mean_over_studies(drawn: np.ndarray, axis: int = -1) -> np.ndarray:
        return sums[drawn].sum(axis=axis) / counts[drawn].sum(axis=axis)

    result = stats.bootstrap(
        (np.arange(ids.size),),
        mean_over_studies,
        n_resamples=n_resamples,
        vectorized=True,
        confidence_level=confidence,
        method=METHOD,
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return [float(interval.low), float(interval.high)]


def case_patients(case_results: Sequence[dict]) -> list[str]:
    """The patient of each case: ``patient_id``, else ``study_id``, else its position (its own patient)."""
    return [
        str(case.get("patient_id") or case.get("study_id") or f"case-{index}")
        for index, case in enumerate(case_results)
    ]


def summary_uncertainty(case_results: Sequence[dict], keys: Sequence[str], lesion_key: str) -> dict:
    """``patients``, ``lesions`` (the sum of ``lesion_key`` over cases) and ``<key>_ci95`` per key.

    ``lesions`` is None when a case lacks ``lesion_key``; keys missing from every case are skipped;
    ``<key>_ci95`` is None with fewer than two patients.
    """
    patients = case_patients(case_results)
    counted = all(lesion_key in case for case in case_results)
    result: dict = {
        "patients": len(set(patients)),
        "lesions": int(sum(case[lesion_key] for case in case_results)) if counted else None,
        "ci95_method": f"{METHOD} bootstrap over patients, {N_RESAMPLES} resamples, seed {SEED}",
    }
    for key in keys:
        if any(key in case for case in case_results):
            values = [case.get(key) for case in case_results]
            result[f"{key}_ci95"] = bootstrap_interval(values, patients)
    return result
