"""GO protein rows: loading and validation (DESIGN.md section 3).

`load_protein_rows(source)` reads rows from a local jsonl / json / parquet / csv file (gzipped
jsonl / csv too), a directory of split files, a saved HF dataset, or a HF dataset name
(`wanglab/cafa5`, or `name:config` for a dataset with configs), then validates each row twice:

1. the core's generic pass (`biopost.data.schema.validate_rows`): `sequence` present, a
   non-empty string of protein letters (ACDEFGHIKLMNPQRSTVWY + BZXUO, checked before
   upper-casing, so `ß`, `ı`, `ﬁ` never pass as residues), truncated to `max_length` (centre
   crop) and counted;
2. the GO pass (`validate_go`): the gold columns `go_mf / go_bp / go_cc` (or, with
   `evidence="exp"`, the experimental columns `go_mf_exp / go_bp_exp / go_cc_exp` of the
   Swiss-Prot fixture, written back as `go_mf / go_bp / go_cc`) must be lists of GO ids
   (`GO:` + 7 digits; a string is split at `;`, `,` and whitespace); an id that is not in the
   ontology is an error (unknown); an `alt_id` is replaced by its primary term and an obsolete
   id dropped, both counted; a term of another namespace than its column is an error; a row
   whose only labels are in `go_pred*` (GO-GPT context) is an error, since gold never comes
   from there; a row without any gold term is an error.

Every error names the file (or dataset), the row and the field; with `skip_invalid=True` the
row is skipped and counted by reason instead. Nothing is dropped silently: `ProteinReport`
carries every count.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from biopost.data.io import DataError, Source
from biopost.data.schema import RowSchema, SeqField, Truncation, ValidationReport, validate_rows

GOLD_COLUMNS = ("go_mf", "go_bp", "go_cc")
EXP_COLUMNS = {"go_mf": "go_mf_exp", "go_bp": "go_bp_exp", "go_cc": "go_cc_exp"}
NAMESPACE_OF_COLUMN = {"go_mf": "molecular_function", "go_bp": "biological_process",
                       "go_cc": "cellular_component"}
EVIDENCE = ("all", "exp")   # all: go_mf / go_bp / go_cc as given; exp: the *_exp columns
GO_ID = re.compile(r"GO:\d{7}")
SEQUENCE_SCHEMA = RowSchema(name="go protein", sequences=(SeqField("sequence", "protein"),))


@dataclass
class ProteinReport:
    """The generic validation report plus the GO pass's counts."""
    split: str
    generic: ValidationReport | None = None
    n_rows: int = 0
    n_valid: int = 0
    skipped: Counter = field(default_factory=Counter)      # reason -> rows
    truncated: int = 0                                     # sequences centre-cropped
    alt_mapped: int = 0                                    # alt ids replaced by their primary term
    obsolete_dropped: int = 0                              # obsolete ids dropped
    duplicate_ids: int = 0                                 # repeated ids in one column, kept once
    terms: int = 0                                         # gold (row, term) pairs kept
    first_errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"split": self.split, "n_rows": self.n_rows, "n_valid": self.n_valid,
                "skipped": dict(self.skipped), "truncated": self.truncated, "alt_mapped": self.alt_mapped,
                "obsolete_dropped": self.obsolete_dropped, "duplicate_ids": self.duplicate_ids,
                "gold_terms": self.terms}

    def summary(self) -> str:
        text = f"{self.split}: {self.n_valid}/{self.n_rows} rows valid"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} x {r}" for r, n in self.skipped.most_common())
        if self.truncated:
            text += f"; truncated {self.truncated} sequences"
        return text + (f"; GO ids: {self.alt_mapped} alt ids mapped, {self.obsolete_dropped} obsolete dropped, "
                       f"{self.terms} gold terms kept")


def _id_list(value, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [v for v in re.split(r"[;,\s]+", value) if v]
    elif hasattr(value, "tolist") and not isinstance(value, list):   # numpy arrays from parquet
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: expected a list of GO ids, got {type(value).__name__}")
    return [v.strip() for v in value]


def _where(row: dict, fld: str | None = None) -> str:
    src = row.get("_source", "?")
    return f"{src}: field {fld!r}" if fld else src


def validate_go(row: dict, onto, evidence: str = "all", report: ProteinReport | None = None) -> dict:
    """The GO pass over one row (after the generic pass): a cleaned copy with `go_mf / go_bp /
    go_cc` holding primary, active ids of their column's namespace, or a DataError."""
    if evidence not in EVIDENCE:
        raise ValueError(f"evidence must be one of {', '.join(EVIDENCE)}, got {evidence!r}")
    counts = Counter()
    out = dict(row)
    n_terms = 0
    for col in GOLD_COLUMNS:
        source_col = EXP_COLUMNS[col] if evidence == "exp" else col
        if evidence == "exp" and source_col not in row:
            raise DataError(f"{_where(row, source_col)}: missing (--evidence exp reads the experimental columns "
                            f"go_mf_exp / go_bp_exp / go_cc_exp; use --evidence all for go_mf / go_bp / go_cc)")
        ids = _id_list(row.get(source_col), _where(row, source_col))
        kept: list[str] = []
        for go_id in ids:
            if not GO_ID.fullmatch(go_id):
                raise DataError(f"{_where(row, source_col)}: malformed GO id {go_id!r:.40} (expected GO: and 7 digits)")
            terms, status = onto.resolve(go_id)
            if status == "unknown":
                raise DataError(f"{_where(row, source_col)}: unknown GO id {go_id} (not in the ontology "
                                f"{onto.data_version or onto.source}, neither a term, an alt_id nor obsolete)")
            if status == "obsolete":
                counts["obsolete"] += 1
                continue
            if status == "alt":
                counts["alt"] += 1
            for t in terms:
                primary = onto.ids[t]
                ns = onto.namespace(t)
                if ns != NAMESPACE_OF_COLUMN[col]:
                    raise DataError(f"{_where(row, source_col)}: {go_id} is a {ns} term, not "
                                    f"{NAMESPACE_OF_COLUMN[col]}")
                if primary in kept:
                    counts["duplicate"] += 1
                else:
                    kept.append(primary)
        out[col] = kept
        n_terms += len(kept)
    if n_terms == 0:
        pred = [k for k in row if k.startswith("go_pred") and row[k] not in (None, "", [])]
        if pred:
            raise DataError(f"{_where(row, pred[0])}: the row's only GO labels are in {', '.join(pred)} "
                            f"(GO-GPT predictions, prompt context only); gold comes only from "
                            f"{' / '.join(EXP_COLUMNS[c] if evidence == 'exp' else c for c in GOLD_COLUMNS)}")
        first_col = EXP_COLUMNS["go_mf"] if evidence == "exp" else "go_mf"
        raise DataError(f"{_where(row, first_col)}: no gold GO term in "
                        f"{' / '.join(EXP_COLUMNS[c] if evidence == 'exp' else c for c in GOLD_COLUMNS)}"
                        + (f" ({counts['obsolete']} obsolete id(s) dropped)" if counts["obsolete"] else ""))
    if report is not None:
        report.alt_mapped += counts["alt"]
        report.obsolete_dropped += counts["obsolete"]
        report.duplicate_ids += counts["duplicate"]
        report.terms += n_terms
    return out


def validate_protein_rows(raw: list[tuple[dict, Source]], split: str, onto, *, max_length: int = 0,
                          evidence: str = "all", skip_invalid: bool = False) -> tuple[list[dict], ProteinReport]:
    """Both passes over raw rows: valid rows (with `_source`) and the report."""
    report = ProteinReport(split=split, n_rows=len(raw))
    truncation = {"protein": Truncation(int(max_length or 0), 0)}
    rows, generic = validate_rows(raw, SEQUENCE_SCHEMA, split, truncation, skip_invalid)
    report.generic = generic
    report.skipped.update(generic.skipped)
    report.first_errors.extend(generic.first_errors)
    report.truncated = sum(generic.truncated.values())
    valid = []
    for row in rows:
        if row.get("protein_id") in (None, ""):
            alt = row.get("id")
            if alt in (None, ""):
                err = DataError(f"{_where(row, 'protein_id')}: missing required field")
                if not skip_invalid:
                    raise DataError(f"{err} (set --skip_invalid true to skip and count such rows)")
                report.skipped["missing protein_id"] += 1
                continue
            row = dict(row, protein_id=str(alt))
        try:
            valid.append(validate_go(row, onto, evidence, report))
        except DataError as e:
            if not skip_invalid:
                raise DataError(f"{e} (set --skip_invalid true to skip and count such rows)") from None
            report.skipped[_reason(str(e))] += 1
            if len(report.first_errors) < 5:
                report.first_errors.append(str(e))
    report.n_valid = len(valid)
    return valid, report


def _reason(message: str) -> str:
    """A countable reason: "field 'go_mf': unknown GO id GO:<id>" (file and row dropped, ids masked)."""
    parts = message.split("\n")[0].split(": ")
    tail = ": ".join(parts[2:]) if len(parts) > 2 else message
    tail = re.sub(r"GO:\d{7}", "GO:<id>", tail)
    tail = re.sub(r"malformed GO id '[^']*'", "malformed GO id <id>", tail)
    return tail.split(" (")[0]


def read_raw(source: str) -> dict[str, list[tuple[dict, Source]]]:
    """Raw rows of `source` by split. A single file without a `split` column is one split,
    `all`; a HF dataset name may carry a config (`name:config`)."""
    from biopost.data.io import (CANONICAL_SPLITS, _from_hf, _is_hf_saved_dataset, _load_from_disk,
                                 discover_split_files, read_file)
    path = Path(source)
    if path.is_dir() and _is_hf_saved_dataset(path):
        return _from_hf(_load_from_disk(path), str(path), CANONICAL_SPLITS)
    if path.is_dir():
        files = discover_split_files(path)
        if not files:
            raise DataError(f"{path}: no split files (expected names like train.jsonl, id_test.csv)")
        return {s: read_file(f) for s, f in files.items()}
    if path.is_file():
        rows = read_file(path)
        return {"all": rows}
    if source.startswith(("/", "./", "../")) or path.suffix in {".jsonl", ".json", ".csv", ".parquet", ".gz"}:
        raise DataError(f"{source}: no such file or directory")
    return _from_hf(_load_hub(source), source, CANONICAL_SPLITS + ("all",))


def _load_hub(name: str):
    try:
        import datasets
    except ImportError:
        raise DataError(f"{name!r} is not a local path; loading it as a HF dataset needs `pip install datasets`") from None
    repo, _, config = name.partition(":")
    try:
        return datasets.load_dataset(repo, config or None)
    except Exception as e:  # the hub client raises many types; say what was tried
        raise DataError(f"{name!r}: not a local file or directory, and loading it as a HF dataset "
                        f"(repo {repo!r}, config {config or None!r}) failed: {type(e).__name__}: {e}") from None


def load_protein_rows(source: str, *, onto=None, max_length: int = 0, evidence: str = "all",
                      skip_invalid: bool = False) -> tuple[dict[str, list[dict]], dict[str, ProteinReport]]:
    """Validated GO protein rows per split (see the module docstring) and their reports."""
    from bioreason_pro.ontology import load_ontology
    onto = onto or load_ontology()
    raw = read_raw(source)
    rows, reports = {}, {}
    for split, items in raw.items():
        rows[split], reports[split] = validate_protein_rows(items, split, onto, max_length=max_length,
                                                            evidence=evidence, skip_invalid=skip_invalid)
    return rows, reports


def check_go_row(row: dict) -> dict:
    """The GO pass of one row against the packaged ontology (the shared, cached scorer's): what a
    core per-task row hook would call after the generic validation (see the issue-15 report)."""
    from bioreason_pro.go_reward import go_scorer
    return validate_go(row, go_scorer().onto)
