"""Helpers of BioReason-Pro/predict.py: reading proteins (FASTA, jsonl, one sequence) and naming
the GO terms of an answer. Torch-free."""
from __future__ import annotations

import functools
import re
from pathlib import Path

from biopost.errors import UserError

_OS = re.compile(r"\bOS=(.+?)(?:\s+[A-Z]{2}=|$)")


class PredictInputError(UserError, ValueError):
    """A protein input (FASTA, jsonl, sequence) that cannot be read; the message names it."""


def read_fasta(path) -> list[dict]:
    """Rows {protein_id, sequence, organism?} of a FASTA file (plain or gzipped). The id is the
    header's first word (UniProt's `sp|P12345|NAME_HUMAN` keeps its accession); the organism comes
    from a UniProt `OS=` field when there is one."""
    from bioreason_pro.ontology import OntologyError, open_text
    path = Path(path)
    try:
        f = open_text(path)
    except OntologyError as e:
        raise PredictInputError(f"--fasta: {e}") from None
    rows: list[dict] = []
    header, seq, line_no = None, [], 0
    with f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith(">"):
                if header is not None:
                    rows.append(_fasta_row(header, seq, path))
                header, seq = line[1:].strip(), []
            elif header is None:
                raise PredictInputError(f"{path}, line {line_no}: sequence before the first '>' header (not FASTA)")
            else:
                seq.append(line)
    if header is not None:
        rows.append(_fasta_row(header, seq, path))
    if not rows:
        raise PredictInputError(f"{path}: no FASTA record")
    return rows


def _fasta_row(header: str, seq: list[str], path: Path) -> dict:
    first = header.split()[0] if header.split() else "protein"
    parts = first.split("|")
    pid = parts[1] if len(parts) >= 3 and parts[0] in ("sp", "tr") else first
    row = {"protein_id": pid, "sequence": "".join(seq).replace("*", "")}
    m = _OS.search(header)
    if m:
        row["organism"] = m.group(1).strip()
    if not row["sequence"]:
        raise PredictInputError(f"{path}: record {pid!r} has an empty sequence")
    return row


@functools.lru_cache(maxsize=4)
def term_names(obo: str | None = None) -> dict[str, str]:
    """GO id -> name from the OBO file (default: the packaged go-basic), alt ids included."""
    from bioreason_pro.ontology import DEFAULT_OBO, open_text
    names: dict[str, str] = {}
    term_id, name, alts, in_term = None, None, [], False

    def flush():
        if in_term and term_id and name:
            names[term_id] = name
            for a in alts:
                names.setdefault(a, name)

    with open_text(obo or DEFAULT_OBO) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("["):
                flush()
                in_term, term_id, name, alts = line == "[Term]", None, None, []
            elif in_term and line.startswith("id: "):
                term_id = line[4:].strip()
            elif in_term and line.startswith("name: "):
                name = line[6:].strip()
            elif in_term and line.startswith("alt_id: "):
                alts.append(line[8:].strip())
        flush()
    return names


def describe_terms(go_ids, scores: dict | None = None, obo: str | None = None) -> list[dict]:
    """[{id, name, aspect, status[, score]}] for the GO ids of an answer, in answer order (or by
    score, highest first): the name from the ontology, the aspect from the term's namespace,
    status term / alt (an alt_id: `primary` names the term) / obsolete / unknown."""
    from bioreason_pro.ontology import ASPECT_OF, load_ontology
    onto = load_ontology(obo)
    names = term_names(obo)
    ids = list(go_ids)
    if scores:
        ids = sorted(ids, key=lambda g: -scores.get(g, 0.0))
    out = []
    for g in ids:
        terms, status = onto.resolve(g)
        entry = {"id": g, "name": names.get(g), "status": status,
                 "aspect": ASPECT_OF.get(onto.namespace(terms[0])) if terms else None}
        if status == "alt":
            entry["primary"] = [onto.ids[t] for t in terms]
        if scores:
            entry["score"] = scores.get(g)
        out.append(entry)
    return out
