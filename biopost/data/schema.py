"""Row schemas and validation: every row is checked before training starts.

A bad row is an error naming file, row and field, or, with `skip_invalid`, is skipped and
counted. Nothing is dropped silently: `ValidationReport` carries every count, and the stages
print it and store it in their config/log. Over-long sequences are truncated as configured
(centre-cropped, since the variant sits in the middle) and counted.
"""
from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field

from biopost.data.io import DataError, Source



def alphabet(modality: str) -> frozenset:
    """The characters a registered modality's sequences may hold (case-insensitive: sequences
    are upper-cased after validation)."""
    from biopost.modality import get_modality
    return frozenset(get_modality(modality).alphabet)


@dataclass(frozen=True)
class SeqField:
    name: str
    modality: str                 # a registered modality: its alphabet checks the field
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class RowSchema:
    """What a task needs of a row. `text` fields must be non-empty strings; `text_or_struct`
    fields may be a string or a mapping (e.g. KEGG's reasoning); list fields hold strings."""
    name: str
    text: tuple[str, ...] = ()
    sequences: tuple[SeqField, ...] = ()
    lists: tuple[str, ...] = ()
    text_or_struct: tuple[str, ...] = ()
    optional_text_or_struct: tuple[str, ...] = ()


@dataclass
class ValidationReport:
    split: str
    n_rows: int = 0
    n_valid: int = 0
    skipped: Counter = field(default_factory=Counter)        # reason -> count
    truncated: Counter = field(default_factory=Counter)      # field -> count
    first_errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.split}: {self.n_valid}/{self.n_rows} rows valid"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} x {r}" for r, n in self.skipped.most_common())
        if self.truncated:
            text += "; truncated " + ", ".join(f"{n} x {f}" for f, n in self.truncated.most_common())
        return text

    def to_dict(self) -> dict:
        return {"split": self.split, "n_rows": self.n_rows, "n_valid": self.n_valid,
                "skipped": dict(self.skipped), "truncated": dict(self.truncated)}


@dataclass(frozen=True)
class Truncation:
    max_length: int = 0        # bases/residues; 0 = no limit
    per_side: int = 0          # keep this many on each side of the centre; 0 = off

    def apply(self, seq: str) -> str:
        limit = self.max_length or 0
        if self.per_side:
            limit = min(limit, 2 * self.per_side) if limit else 2 * self.per_side
        if not limit or len(seq) <= limit:
            return seq
        start = (len(seq) - limit) // 2
        return seq[start:start + limit]


_BAD_CHARS = re.compile(r"[^A-Za-z]")


def _check_sequence(value, fld: SeqField) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a {fld.modality} sequence string, got {type(value).__name__}")
    seq = value.strip()
    if not seq:
        raise ValueError("empty sequence")
    allowed = alphabet(fld.modality)
    # Compare against both ASCII cases before upper-casing: str.upper() maps 'ß' to 'SS' and 'ﬁ'
    # to 'FI', which would turn non-residue characters into valid ones.
    bad = sorted(set(seq) - allowed - {c.lower() for c in allowed})
    if bad:
        pos = next(i for i, c in enumerate(seq) if c in bad)
        shown = ", ".join(repr(c) for c in bad[:5])
        raise ValueError(f"character(s) {shown} outside the {fld.modality} alphabet "
                         f"({''.join(sorted(allowed))}), first at position {pos + 1}")
    return seq.upper()


def validate_row(row: dict, schema: RowSchema, src: Source, truncation: dict[str, Truncation],
                 truncated: Counter) -> dict:
    """Return a cleaned copy of `row` (sequences upper-cased and truncated) or raise DataError."""
    out = dict(row)
    for name in schema.text:
        value = row.get(name)
        if value is None:
            raise DataError(f"{src.where(name)}: missing required field")
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{src.where(name)}: expected a non-empty string, got {value!r:.60}")
    for name in schema.text_or_struct + schema.optional_text_or_struct:
        value = row.get(name)
        if value is None:
            if name in schema.text_or_struct:
                raise DataError(f"{src.where(name)}: missing required field")
            continue
        if isinstance(value, dict):
            steps = value.get("reasoning_steps")
            if steps is not None and not (isinstance(steps, list) and all(isinstance(s, str) for s in steps)):
                raise DataError(f"{src.where(name)}: 'reasoning_steps' must be a list of strings")
        elif not isinstance(value, str):
            raise DataError(f"{src.where(name)}: expected a string or a mapping, got {type(value).__name__}")
    for name in schema.lists:
        value = row.get(name)
        if value is None:
            raise DataError(f"{src.where(name)}: missing required field")
        if isinstance(value, str):
            value = [v for v in re.split(r"[;,\s]+", value) if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DataError(f"{src.where(name)}: expected a list of strings")
        out[name] = value
    for fld in schema.sequences:
        present = [n for n in (fld.name,) + fld.aliases if row.get(n) is not None]
        if not present:
            raise DataError(f"{src.where(fld.name)}: missing required field"
                            + (f" (also accepted: {', '.join(fld.aliases)})" if fld.aliases else ""))
        try:
            seq = _check_sequence(row[present[0]], fld)
        except ValueError as e:
            raise DataError(f"{src.where(present[0])}: {e}") from None
        cut = truncation.get(fld.modality, Truncation()).apply(seq)
        if len(cut) != len(seq):
            truncated[fld.name] += 1
        out[fld.name] = cut
    return out


def validate_rows(rows: list[tuple[dict, Source]], schema: RowSchema, split: str,
                  truncation: dict[str, Truncation] | None = None,
                  skip_invalid: bool = False) -> tuple[list[dict], ValidationReport]:
    """Validated rows (each with `_source` set to 'file: row N') and the report."""
    report = ValidationReport(split=split, n_rows=len(rows))
    valid = []
    for row, src in rows:
        try:
            clean = validate_row(row, schema, src, truncation or {}, report.truncated)
        except DataError as e:
            if not skip_invalid:
                raise DataError(f"{e} (set --skip_invalid true to skip and count such rows)") from None
            report.skipped[_reason_key(str(e))] += 1
            if len(report.first_errors) < 5:
                report.first_errors.append(str(e))
            continue
        clean["_source"] = src.where()
        valid.append(clean)
    report.n_valid = len(valid)
    return valid, report


def _reason_key(message: str) -> str:
    """'file: line 3: field 'x': problem at position 9' -> "field 'x': problem" (for counting)."""
    parts = message.split(": ")
    tail = ": ".join(p for p in parts[2:]) if len(parts) > 2 else message
    return re.sub(r",? first at position \d+", "", tail)


def fraction_subset(rows: list, fraction: float, seed: int = 0) -> list:
    """The first ceil(f*N) rows of one fixed seeded permutation: a 20% subset lies inside the 40% one."""
    if not 0 < fraction <= 1:
        raise ValueError(f"train_data_fraction must be in (0, 1], got {fraction}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    keep = sorted(order[:math.ceil(fraction * len(rows))])
    return [rows[i] for i in keep]
