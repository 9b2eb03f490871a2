"""cafaeval's file formats: ground truth, predictions and information accretion (IA).

- truth: `protein<TAB>term` a line (any whitespace; further columns, such as CAFA5's aspect
  column, are ignored);
- predictions: `protein<TAB>term<TAB>score` a line; a file, or a folder whose files (recursively)
  are one method each;
- IA: `term<TAB>ia` a line.

Read the way cafaeval 1.3.0's parser.py reads them (docs/go_metrics.md lists each rule):
ids are resolved against the ontology (an alt_id becomes its term, an obsolete or unknown id is
dropped and counted); a term's namespace comes from the ontology, not from any column; truth is
propagated to ancestors; a prediction counts only for a protein that has truth in the term's
namespace, a (protein, term) predicted twice keeps its highest score, and scores propagate to
ancestors as the maximum over the term's descendants. Lines with fewer than three fields in a
prediction file are skipped and counted (CAFA's AUTHOR / MODEL / END header lines). Where
cafaeval would crash or silently misread (a truth line with one field, a score that is not a
number, NaN) this module raises an error naming the file, line and field instead.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biopost.errors import UserError
from biopost.metrics.multilabel import max_by_pair, unique_pairs
from biopost.files import write_text_atomic

from bioreason_pro.ontology import Ontology, open_text


class CafaFileError(UserError, ValueError):
    """A truth, prediction or IA file that cannot be read; the message names file and line."""


@dataclass
class NamespaceTruth:
    """One namespace's evaluated proteins (rows in first-seen order, as cafaeval's) and their
    propagated gold terms as (row, term index inside the namespace) pairs."""
    namespace: str
    proteins: list[str]
    index: dict[str, int]
    rows: np.ndarray
    cols: np.ndarray


@dataclass
class Truth:
    path: str
    namespaces: dict[str, NamespaceTruth]
    counts: dict = field(default_factory=dict)


@dataclass
class NamespacePredictions:
    namespace: str
    rows: np.ndarray      # row of the namespace's truth
    cols: np.ndarray      # term index inside the namespace
    scores: np.ndarray    # propagated (max over descendants)
    n_proteins: int       # proteins of the truth with at least one prediction line here


@dataclass
class Predictions:
    path: str
    name: str
    namespaces: dict[str, NamespacePredictions]
    counts: dict = field(default_factory=dict)


def _count(counts: dict, key: str, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def read_truth(path, onto: Ontology) -> Truth:
    """The ground truth file, resolved and propagated within each namespace."""
    path = Path(path)
    counts: dict = {"lines": 0, "annotations": 0, "alt_replaced": 0, "obsolete": 0, "unknown": 0}
    per_ns: dict[str, dict[str, list[int]]] = {}
    try:
        f = open_text(path)
    except UserError as e:
        raise CafaFileError(f"truth file: {e}") from None
    with f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            counts["lines"] += 1
            if len(fields) < 2:
                raise CafaFileError(f"{path}, line {lineno}: a truth line is 'protein<TAB>term', "
                                    f"got one field {fields[0]!r}")
            protein, term = fields[0], fields[1]
            terms, status = onto.resolve(term)
            if not terms:
                _count(counts, status)
                continue
            if status == "alt":
                counts["alt_replaced"] += len(terms)
            for t in terms:
                per_ns.setdefault(onto.namespace(t), {}).setdefault(protein, []).append(t)
                counts["annotations"] += 1
    namespaces = {}
    for ns in onto.namespaces:
        proteins_terms = per_ns.get(ns)
        if not proteins_terms:
            continue
        start, stop = onto.namespace_range(ns)
        proteins = list(proteins_terms)
        rows = np.concatenate([np.full(len(v), i, dtype=np.int64) for i, v in enumerate(proteins_terms.values())])
        terms = np.concatenate([np.asarray(v, dtype=np.int64) for v in proteins_terms.values()])
        src, anc = onto.expand(terms)
        r, c = unique_pairs(rows[src], anc - start, stop - start)
        namespaces[ns] = NamespaceTruth(ns, proteins, {p: i for i, p in enumerate(proteins)}, r, c)
    if not namespaces:
        raise CafaFileError(f"{path}: no line has a protein and a GO term of the ontology "
                            f"({counts['lines']} lines, {counts['unknown']} unknown and "
                            f"{counts['obsolete']} obsolete ids)")
    return Truth(str(path), namespaces, counts)


def read_predictions(path, onto: Ontology, truth: Truth, name: str | None = None) -> Predictions:
    """One method's prediction file, restricted to the truth's proteins and propagated."""
    path = Path(path)
    counts: dict = {"lines": 0, "short_lines": 0, "used": 0, "alt_replaced": 0, "obsolete": 0,
                    "unknown": 0, "no_truth_in_namespace": 0}
    buf: dict[str, tuple[list, list, list]] = {ns: ([], [], []) for ns in truth.namespaces}
    truth_index = {ns: t.index for ns, t in truth.namespaces.items()}
    index, alt, ns_of, names = onto.index, onto.alt, onto.ns_of, onto.namespaces
    try:
        f = open_text(path)
    except UserError as e:
        raise CafaFileError(f"prediction file: {e}") from None
    with f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            counts["lines"] += 1
            if len(fields) < 3:
                counts["short_lines"] += 1
                continue
            protein, term, score = fields[0], fields[1], fields[2]
            t = index.get(term)
            if t is not None:
                terms = (t,)
            else:
                terms = alt.get(term)
                if terms is None:
                    _count(counts, "obsolete" if term in onto.obsolete else "unknown")
                    continue
            ns = names[ns_of[terms[0]]]
            rows = truth_index.get(ns)
            row = None if rows is None else rows.get(protein)
            if row is None:
                counts["no_truth_in_namespace"] += 1
                continue
            try:
                value = float(score)
            except ValueError:
                raise CafaFileError(f"{path}, line {lineno}, field 3 (score): {score!r} is not a number") from None
            if math.isnan(value):
                raise CafaFileError(f"{path}, line {lineno}, field 3 (score): NaN")
            if t is None:
                counts["alt_replaced"] += len(terms)
            r_, c_, s_ = buf[ns]
            for tt in terms:
                r_.append(row)
                c_.append(tt)
                s_.append(value)
            counts["used"] += 1
    namespaces = {}
    for ns, (r, c, s) in buf.items():
        if not r:
            continue
        start, stop = onto.namespace_range(ns)
        rows = np.asarray(r, dtype=np.int64)
        terms = np.asarray(c, dtype=np.int64)
        scores = np.asarray(s, dtype=np.float64)
        # dedupe before propagating: fewer entries to expand
        rows, terms, scores = max_by_pair(rows, terms, scores, len(onto))
        src, anc = onto.expand(terms)
        pr, pc, ps = max_by_pair(rows[src], anc - start, scores[src], stop - start)
        namespaces[ns] = NamespacePredictions(ns, pr, pc, ps, int(np.unique(rows).size))
    return Predictions(str(path), name or path.name, namespaces, counts)


def prediction_files(path) -> list[tuple[str, Path]]:
    """(method name, file) for a prediction file, or for every file under a folder
    (recursively, sorted; hidden files skipped). The name of a file in a folder is its path
    relative to the folder with '/' replaced by '_', as cafaeval's `filename` column."""
    path = Path(path)
    if path.is_file():
        return [(path.name, path)]
    if not path.is_dir():
        raise CafaFileError(f"prediction path {path} is neither a file nor a folder")
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            full = Path(root) / name
            out.append((str(full.relative_to(path)).replace(os.sep, "_"), full))
    if not out:
        raise CafaFileError(f"prediction folder {path} holds no files")
    return out


# --- information accretion files -------------------------------------------------------------------

def read_ia(path, onto: Ontology) -> tuple[np.ndarray, dict]:
    """IA weight of every term of the ontology (0 for a term the file does not list, and for
    inf / NaN, as cafaeval's `nan_to_num`), and counts of what the file held. An IA for an alt
    id or an unknown id is ignored, as cafaeval ignores it."""
    path = Path(path)
    ia = np.zeros(len(onto))
    counts = {"lines": 0, "terms": 0, "not_a_term": 0, "non_finite": 0}
    try:
        f = open_text(path)
    except UserError as e:
        raise CafaFileError(f"IA file: {e}") from None
    with f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            counts["lines"] += 1
            if len(fields) != 2:
                raise CafaFileError(f"{path}, line {lineno}: an IA line is 'term<TAB>ia', got {len(fields)} fields")
            try:
                value = float(fields[1])
            except ValueError:
                raise CafaFileError(f"{path}, line {lineno}, field 2 (ia): {fields[1]!r} is not a number") from None
            i = onto.index.get(fields[0])
            if i is None:
                counts["not_a_term"] += 1
                continue
            if not math.isfinite(value):
                counts["non_finite"] += 1
                value = 0.0
            if value < 0:
                raise CafaFileError(f"{path}, line {lineno}, field 2 (ia): {value} < 0")
            ia[i] = value
            counts["terms"] += 1
    return ia, counts


def format_ia(onto: Ontology, ia: np.ndarray) -> str:
    """The two-column `term<TAB>ia` text of every term, sorted by id, IA as repr() floats
    (round-trips exactly)."""
    order = sorted(range(len(onto)), key=onto.ids.__getitem__)
    return "".join(f"{onto.ids[i]}\t{float(ia[i])!r}\n" for i in order)


def write_ia(path, onto: Ontology, ia: np.ndarray) -> Path:
    """Write the IA file atomically (plain text; gzipped when the name ends in .gz)."""
    text = format_ia(onto, ia)
    path = Path(path)
    if path.suffix == ".gz":
        import gzip
        from biopost.files import write_bytes_atomic
        return write_bytes_atomic(path, gzip.compress(text.encode(), mtime=0))
    return write_text_atomic(path, text)
