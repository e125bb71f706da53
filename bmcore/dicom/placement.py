"""Choosing one series per modality: the user's mapping first, then the rules; never a silent guess.

Where several series fit a modality and exactly one of them is an original (ImageType ORIGINAL, the
others DERIVED: reformats, MIPs), the original is chosen and the choice says so. Otherwise a modality
that no series fits or that several fit is refused in one line that names the candidates and says how
to choose (``--map NUMBER=MODALITY`` on the command line, a mapping in the dashboard).
Every MR series left unused is returned with the reason, so callers can say what they did not place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bmcore.dicom.errors import DicomError
from bmcore.dicom.identify import Identification
from bmcore.dicom.series import Series
from bmcore.imaging import MODALITIES

MAP_HINT = "choose with --map NUMBER=MODALITY (t1, t1ce, t2, flair)"
SHOWN_UNPLACED = 8


@dataclass(frozen=True)
class Placement:
    """The series chosen per modality (in :data:`MODALITIES` order), why each, and the series left over."""

    chosen: dict[str, Series]
    why: dict[str, str]
    unplaced: list[tuple[Series, str]]


def parse_mapping(items: list[str]) -> dict[int, str]:
    """``["5=t1ce", "7=flair"]`` → ``{5: "t1ce", 7: "flair"}``."""
    mapping: dict[int, str] = {}
    for item in items:
        number, sep, modality = (part.strip() for part in item.partition("="))
        if not sep or not number.lstrip("-").isdigit() or modality not in MODALITIES:
            raise DicomError(
                f"--map {item!r}: expected SERIES_NUMBER=MODALITY, MODALITY one of t1, t1ce, t2, flair"
            )
        if int(number) in mapping:
            raise DicomError(f"--map: series {number} is given twice")
        mapping[int(number)] = modality
    return mapping


def _mapped(series: list[Series], mapping: Mapping[int, str]) -> dict[str, Series]:
    """The series the user placed by number, after checking the mapping against what is there."""
    chosen: dict[str, Series] = {}
    for number, modality in mapping.items():
        if modality not in MODALITIES:
            raise DicomError(f"mapping: {modality!r} is not one of {', '.join(MODALITIES)}")
        if modality in chosen:
            raise DicomError(f"mapping: {modality} is given to series {chosen[modality].number} and {number}")
        matches = [s for s in series if s.number == number]
        if not matches:
            numbers = ", ".join(str(s.number) for s in series if s.number is not None) or "none"
            raise DicomError(f"mapping: there is no series {number} (series here: {numbers})")
        if len(matches) > 1:
            raise DicomError(
                f"mapping: {len(matches)} series share the number {number}; cannot tell them apart"
            )
        if not matches[0].is_mr_image:
            raise DicomError(
                f"mapping: {matches[0].label} is {matches[0].sop_class_name}, not an MR image series"
            )
        chosen[modality] = matches[0]
    return chosen


def describe_unplaced(unplaced: list[tuple[Series, str]]) -> str:
    """The series left over, in one clause (the first few of them)."""
    shown = [f"{s.label} ({why})" for s, why in unplaced[:SHOWN_UNPLACED]]
    more = len(unplaced) - SHOWN_UNPLACED
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def place_series(
    series: list[Series], found: Mapping[str, Identification], mapping: Mapping[int, str] | None = None
) -> Placement:
    """One MR series per modality: the ``mapping`` (series number → modality) first, then the series the
    rules identified (``found``, by SeriesInstanceUID). Refuses a modality that none or several fit."""
    chosen = _mapped(series, mapping or {})
    why = {m: "placed by the mapping" for m in chosen}
    taken = {s.uid for s in chosen.values()}
    problems = []
    for modality in MODALITIES:
        if modality in chosen:
            continue
        fits = [s for s in series if s.uid not in taken and found[s.uid].modality == modality]
        originals = [s for s in fits if not is_derived(s)]
        if len(fits) == 1 or len(originals) == 1:
            pick = fits[0] if len(fits) == 1 else originals[0]
            chosen[modality], why[modality] = pick, found[pick.uid].why
            if len(fits) > 1:
                why[modality] += f"; the one original of {len(fits)} series that fit (the others are DERIVED)"
            taken.add(pick.uid)
        elif fits:
            problems.append(f"{modality}: {' and '.join(s.label for s in fits)} all fit")
        else:
            problems.append(f"{modality}: no series fits (a missing sequence?)")
    unplaced = [(s, _left_over(s, found[s.uid], chosen)) for s in series if s.uid not in taken]
    if problems:
        left = f"; not placed: {describe_unplaced(unplaced)}" if unplaced else ""
        raise DicomError(f"cannot place every sequence: {'; '.join(problems)}{left}; {MAP_HINT}")
    return Placement({m: chosen[m] for m in MODALITIES}, {m: why[m] for m in MODALITIES}, unplaced)


def is_derived(series: Series) -> bool:
    """Whether the series is a reconstruction from others (ImageType value 1 DERIVED: an MPR, a MIP, …)."""
    return str(series.attributes.get("image_type") or "").upper().split("\\")[0] == "DERIVED"


def _left_over(series: Series, identification: Identification, chosen: Mapping[str, Series]) -> str:
    modality = identification.modality
    if modality is not None and modality in chosen:
        derived = " (DERIVED)" if is_derived(series) else ""
        return f"reads as {modality}{derived}, but {modality} is {chosen[modality].label}"
    return identification.why
