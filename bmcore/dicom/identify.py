"""Which series is t1, t1ce, t2 and flair: an ordered rules table, a user's mapping, and nothing guessed.

Each MR series is matched against the rules in order; the first rule whose every condition holds names
its modality (or ``ignore``: localizers, diffusion, perfusion, …). A rule's conditions:

* ``text`` / ``not_text``: regular expressions that must (not) match the lower-cased SeriesDescription
  and ProtocolName, with every run of characters other than letters, digits and ``+`` turned into one
  space (``t2_tirm_tra_dark-fluid`` reads ``t2 tirm tra dark fluid``);
* ``contrast``: true when the series shows contrast (ContrastBolusAgent set, or the text matches
  ``contrast_words`` and not ``precontrast_words``), false when it does not;
* ``image_type``, ``sequence``: expressions matched against ImageType (``ORIGINAL\\PRIMARY\\M``) and
  ScanningSequence + SequenceVariant (``SE IR SK``);
* ``echo_time``, ``repetition_time``, ``inversion_time``: ``[min, max]`` in ms (``null`` or ``inf`` for
  an open end); a missing attribute fails the condition.

The built-in table is :data:`DEFAULT_RULES`; a JSON or TOML file of the same shape replaces it
(:func:`load_rules`, ``bmseg import-dicom --rules FILE`` or ``BMSEG_DICOM_RULES_FILE``). A user mapping
``{series_number: modality}`` overrides the rules. A modality that no series fits, or that several fit,
is refused with the candidates named; series that end up unused are reported, never dropped silently.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from bmcore.config import get_settings
from bmcore.dicom.errors import DicomError
from bmcore.dicom.series import Series
from bmcore.imaging import MODALITIES

T1_WORDS = r"\bt1|mp ?rage|\bspgr\b|\bfspgr\b|\bbravo\b|\btfl\b|\bvibe\b|\bflash\b"
DEFAULT_RULES: dict = {
    "contrast_words": r"\b(post|gd|gad|gado\w*|contrast|kontrast\w*|mdc|km|ce|t1c|t1ce)\b|\+ ?(c|gd)\b|\bc\+",
    "precontrast_words": r"\b(pre|native?|nativ|plain|without|wo|nc|non ?contrast|no contrast)\b",
    "rules": [
        {
            "modality": "ignore",
            "text": r"\b(locali[sz]er|scout|survey|aahead|calibration|dwi|diffusion|adc|trace|dti|swi|"
            r"perfusion|pwi|dsc|dce|asl|mip|minip)\b",
            "why": "not a structural series",
        },
        {"modality": "flair", "text": r"flair|dark ?fluid|\btirm\b", "not_text": r"\bt1"},
        {"modality": "t2", "text": r"\bt2|\btse\b|\bfse\b", "not_text": T1_WORDS},
        {"modality": "t1ce", "text": T1_WORDS, "contrast": True},
        {"modality": "t1", "text": T1_WORDS, "contrast": False},
        {"modality": "flair", "inversion_time": [1500, None], "echo_time": [60, None]},
        {"modality": "t2", "echo_time": [60, None], "repetition_time": [1500, None]},
        {"modality": "t1ce", "echo_time": [None, 30], "contrast": True},
        {"modality": "t1", "echo_time": [None, 30], "contrast": False},
    ],
}
PATTERN_KEYS = ("text", "not_text", "image_type", "sequence")
RANGE_KEYS = ("echo_time", "repetition_time", "inversion_time")
RANGE_NAMES = {"echo_time": "TE", "repetition_time": "TR", "inversion_time": "TI"}
RULE_KEYS = {"modality", "contrast", "why", *PATTERN_KEYS, *RANGE_KEYS}


@dataclass(frozen=True)
class Rule:
    modality: str
    patterns: dict[str, re.Pattern]
    ranges: dict[str, tuple[float, float]]
    contrast: bool | None
    why: str


@dataclass(frozen=True)
class Rules:
    contrast_words: re.Pattern
    precontrast_words: re.Pattern
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Identification:
    """What the rules make of a series: a modality (None: not placed) and why, in words."""

    modality: str | None
    why: str


# ------------------------------------------------------------------------------------------------ rules


def _pattern(value: object, where: str) -> re.Pattern:
    if not isinstance(value, str):
        raise DicomError(f"{where}: expected a regular expression string")
    try:
        return re.compile(value)
    except re.error as exc:
        raise DicomError(f"{where}: not a regular expression ({exc})") from None


def _range(value: object, where: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise DicomError(f"{where}: expected [min, max] in ms (null or inf for an open end)")
    try:
        low, high = (None if v is None else float(v) for v in value)
    except (TypeError, ValueError):
        raise DicomError(f"{where}: expected [min, max] in ms (null or inf for an open end)") from None
    return (-math.inf if low is None else low, math.inf if high is None else high)


def _rule(entry: object, where: str) -> Rule:
    if not isinstance(entry, dict):
        raise DicomError(f"{where}: expected a table of conditions")
    unknown = sorted(set(entry) - RULE_KEYS)
    if unknown:
        raise DicomError(
            f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(RULE_KEYS))})"
        )
    modality = entry.get("modality")
    if modality not in (*MODALITIES, "ignore"):
        raise DicomError(f"{where}: modality must be one of {', '.join(MODALITIES)} or ignore")
    contrast = entry.get("contrast")
    if contrast is not None and not isinstance(contrast, bool):
        raise DicomError(f"{where}: contrast must be true or false")
    return Rule(
        modality=modality,
        patterns={k: _pattern(entry[k], f"{where}: {k}") for k in PATTERN_KEYS if k in entry},
        ranges={k: _range(entry[k], f"{where}: {k}") for k in RANGE_KEYS if entry.get(k) is not None},
        contrast=contrast,
        why=str(entry.get("why") or ""),
    )


def parse_rules(data: object, source: str = "rules") -> Rules:
    """A rules table from plain data of :data:`DEFAULT_RULES`' shape (the word patterns are optional)."""
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list) or not data["rules"]:
        raise DicomError(f"{source}: expected a table with a non-empty list 'rules'")
    unknown = sorted(set(data) - {"rules", "contrast_words", "precontrast_words"})
    if unknown:
        raise DicomError(f"{source}: unknown key(s) {', '.join(unknown)}")
    words = {k: data.get(k, DEFAULT_RULES[k]) for k in ("contrast_words", "precontrast_words")}
    return Rules(
        contrast_words=_pattern(words["contrast_words"], f"{source}: contrast_words"),
        precontrast_words=_pattern(words["precontrast_words"], f"{source}: precontrast_words"),
        rules=tuple(_rule(entry, f"{source}: rule {n}") for n, entry in enumerate(data["rules"], start=1)),
    )


def load_rules(path: Path | None = None) -> Rules:
    """The rules of a JSON or TOML file (``path``, else ``BMSEG_DICOM_RULES_FILE``), else the built-in."""
    path = path or get_settings().dicom_rules_file
    if path is None:
        return parse_rules(DEFAULT_RULES, "built-in rules")
    path = Path(path)
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except OSError as exc:
        raise DicomError(f"{path.name}: cannot read the rules file ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DicomError(f"{path.name}: not valid {path.suffix.lstrip('.') or 'JSON'} ({exc})") from None
    return parse_rules(data, path.name)


# -------------------------------------------------------------------------------------- identification


def series_text(series: Series) -> str:
    """SeriesDescription and ProtocolName as the rules read them."""
    names = " ".join(dict.fromkeys(n for n in (series.description, series.protocol) if n))
    return re.sub(r"[^a-z0-9+]+", " ", names.lower()).strip()


def _contrast(series: Series, text: str, rules: Rules) -> tuple[bool, str]:
    agent = str(series.attributes.get("contrast_agent") or "")
    if agent:
        return True, "ContrastBolusAgent is set"
    if rules.precontrast_words.search(text):
        return False, "its name says before contrast"
    if rules.contrast_words.search(text):
        return True, "its name says contrast"
    return False, "no sign of contrast"


def _holds(rule: Rule, series: Series, text: str, contrast: bool) -> bool:
    subjects = {
        "text": text,
        "not_text": text,
        "image_type": str(series.attributes.get("image_type") or "").upper(),
        "sequence": str(series.attributes.get("sequence") or "").upper(),
    }
    for key, pattern in rule.patterns.items():
        found = pattern.search(subjects[key]) is not None
        if found != (key != "not_text"):
            return False
    for key, (low, high) in rule.ranges.items():
        value = series.attributes.get(key)
        if value is None or not low <= float(value) <= high:
            return False
    return rule.contrast is None or rule.contrast == contrast


def _timing(series: Series) -> str:
    parts = [
        f"{RANGE_NAMES[key]} {series.attributes[key]:g} ms"
        for key in RANGE_KEYS
        if series.attributes.get(key) is not None
    ]
    return ", ".join(parts) or "no sequence timing"


def identify(series: Series, rules: Rules) -> Identification:
    """The first rule that holds for ``series``, in words; non-MR series are never placed."""
    if not series.is_mr_image:
        return Identification(None, f"{series.sop_class_name}, not MR Image Storage")
    text = series_text(series)
    contrast, contrast_why = _contrast(series, text, rules)
    for rule in rules.rules:
        if not _holds(rule, series, text, contrast):
            continue
        if rule.modality == "ignore":
            return Identification(None, f"ignored: {rule.why or 'an ignore rule holds'}")
        name = series.description or series.protocol
        reads = f'"{name}"' if "text" in rule.patterns else _timing(series)
        why = rule.why or f"{reads} reads as {rule.modality}"
        if rule.contrast is not None:
            why += f" ({contrast_why})"
        return Identification(rule.modality, why)
    return Identification(None, f'no rule holds for "{series.description}" ({_timing(series)})')
