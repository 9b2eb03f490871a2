"""Information accretion (IA) of GO terms from an annotation set (Wyatt & Radivojac 2013; CAFA).

    IA(t) = -log2( N(t) / N(Pa(t)) )

N(t) counts the proteins annotated with t after propagation to ancestors within t's namespace;
N(Pa(t)) those annotated (after propagation) with *every* direct parent of t over is_a and
part_of. It is the information a term adds once its parents are known, so a protein's IA-weighted
annotation sums what is specific about it and a prediction of generic terms earns little.
Conventions (docs/go_metrics.md):

- a root (no parent) has N(Pa) = the proteins with any kept annotation in its namespace, so
  IA(root) = 0; a term no protein has (N(t) = 0) gets IA 0, which is what cafaeval makes of the
  inf / NaN the formula gives (its `nan_to_num`), and takes the term out of weighted metrics;
- only rows with an experimental evidence code count by default (EXPERIMENTAL, as CAFA);
- rows with a NOT qualifier are excluded, and counted;
- ids are resolved as everywhere (alt_id -> term; obsolete and unknown ids dropped and counted);
  the namespace comes from the ontology, not from the file's aspect column.

Inputs: GAF 2.x (`!` comment lines, 15-17 tab-separated columns), NCBI gene2go
(`#tax_id GeneID GO_ID Evidence Qualifier ...`), or any tab-separated file with a header naming
a protein / gene column, a GO id column and optionally evidence and qualifier columns (such as
the `entrez_id symbol go_id aspect evidence` extract of org.Hs.eg.db). Plain or gzipped.

    python -m bioreason_pro.information_accretion --obo go-basic.obo.gz \
        --annotations human_gene2go.tsv.gz --out IA.tsv
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biopost.errors import UserError
from biopost.metrics.multilabel import unique_pairs

from bioreason_pro.cafa_files import CafaFileError, write_ia
from bioreason_pro.ontology import Ontology, load_ontology, open_text

EXPERIMENTAL = ("EXP", "IDA", "IPI", "IMP", "IGI", "IEP", "TAS", "IC")
# Header names (case-folded) recognised in a tab-separated annotation file with a header.
_PROTEIN_COLUMNS = ("db_object_id", "geneid", "entrez_id", "protein", "protein_id", "entryid", "gene_id")
_TERM_COLUMNS = ("go_id", "go", "term", "go_term_id")
_EVIDENCE_COLUMNS = ("evidence", "evidence_code")
_QUALIFIER_COLUMNS = ("qualifier",)
_NOT = re.compile(r"(?:^|[|\s])NOT(?:$|[|\s])")


class AnnotationFileError(CafaFileError):
    """An annotation file that cannot be read; names file, line and field."""


@dataclass
class Annotations:
    """Kept annotations: protein -> term indices (unpropagated, may repeat), and counts."""
    path: str
    by_protein: dict[str, list[int]]
    counts: dict = field(default_factory=dict)


def _columns(header: list[str], path) -> tuple[int, int, int | None, int | None]:
    names = [h.strip().lstrip("#").strip().casefold() for h in header]

    def find(options, required, what):
        for o in options:
            if o in names:
                return names.index(o)
        if required:
            raise AnnotationFileError(f"{path}, line 1: no {what} column in the header "
                                      f"(looked for {', '.join(options)}; found {', '.join(names)})")
        return None
    return (find(_PROTEIN_COLUMNS, True, "protein"), find(_TERM_COLUMNS, True, "GO id"),
            find(_EVIDENCE_COLUMNS, False, "evidence"), find(_QUALIFIER_COLUMNS, False, "qualifier"))


def read_annotations(path, onto: Ontology, *, evidence: tuple[str, ...] | None = EXPERIMENTAL) -> Annotations:
    """Annotation rows kept for IA: experimental (`evidence`; None keeps every code), not NOT,
    with a GO id of the ontology. A file without an evidence column counts every row when
    `evidence` is None and is an error otherwise (IA from unknown evidence is not CAFA's)."""
    path = Path(path)
    counts = {"rows": 0, "not_qualifier": 0, "evidence_excluded": 0, "obsolete": 0, "unknown": 0,
              "alt_replaced": 0, "kept": 0}
    by_protein: dict[str, list[int]] = {}
    allowed = None if evidence is None else frozenset(evidence)
    try:
        f = open_text(path)
    except UserError as e:
        raise AnnotationFileError(f"annotation file: {e}") from None
    with f:
        cols = None  # (protein, term, evidence, qualifier) column numbers
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n\r")
            if not line.strip():
                continue
            if line.startswith("!"):  # GAF header / comment
                cols = cols or (1, 4, 6, 3)
                continue
            fields = line.split("\t")
            if cols is None:
                if line.startswith("#") or not fields[0].startswith(("UniProtKB", "GO:")) and \
                        not any(x.startswith("GO:") for x in fields):
                    cols = _columns(fields, path)
                    if allowed is not None and cols[2] is None:
                        raise AnnotationFileError(f"{path}, line {lineno}: no evidence column, so the "
                                                  f"experimental-evidence filter cannot apply "
                                                  f"(pass evidence=None to count every row)")
                    continue
                cols = (1, 4, 6, 3)  # a GAF without its header lines
            p_col, t_col, e_col, q_col = cols
            need = max(c for c in cols if c is not None)
            if len(fields) <= need:
                raise AnnotationFileError(f"{path}, line {lineno}: {len(fields)} tab-separated fields, "
                                          f"need at least {need + 1}")
            counts["rows"] += 1
            if q_col is not None and _NOT.search(fields[q_col]):
                counts["not_qualifier"] += 1
                continue
            if allowed is not None and fields[e_col].strip() not in allowed:
                counts["evidence_excluded"] += 1
                continue
            protein, term = fields[p_col].strip(), fields[t_col].strip()
            if not protein:
                raise AnnotationFileError(f"{path}, line {lineno}, field {p_col + 1} (protein): empty")
            terms, status = onto.resolve(term)
            if not terms:
                counts[status] += 1
                continue
            if status == "alt":
                counts["alt_replaced"] += 1
            by_protein.setdefault(protein, []).extend(terms)
            counts["kept"] += 1
    counts["proteins"] = len(by_protein)
    return Annotations(str(path), by_protein, counts)


def information_accretion(onto: Ontology, annotations: Annotations | dict) -> np.ndarray:
    """IA of every term of the ontology (0 where no protein has it). `annotations` is an
    `Annotations` or a plain {protein: [term index, ...]}."""
    from scipy import sparse

    by_protein = annotations.by_protein if isinstance(annotations, Annotations) else annotations
    ia = np.zeros(len(onto))
    if not by_protein:
        return ia
    rows = np.concatenate([np.full(len(v), i, dtype=np.int64) for i, v in enumerate(by_protein.values())])
    terms = np.concatenate([np.asarray(v, dtype=np.int64) for v in by_protein.values()])
    n_proteins = len(by_protein)
    for ns in onto.namespaces:
        start, stop = onto.namespace_range(ns)
        m = (terms >= start) & (terms < stop)
        if not m.any():
            continue
        src, anc = onto.expand(terms[m])
        r, c = unique_pairs(rows[m][src], anc - start, stop - start)
        n_terms = stop - start
        present = sparse.csr_matrix((np.ones(r.size, dtype=np.int32), (r, c)), shape=(n_proteins, n_terms))
        n_t = np.bincount(c, minlength=n_terms).astype(np.float64)
        # parents[p, t] = 1 when p is a direct parent of t: (present @ parents)[r, t] counts the
        # parents of t that protein r has; N(Pa(t)) counts the rows where that is all of them
        ptr = onto.parent_indptr[start:stop + 1] - onto.parent_indptr[start]
        par = onto.parents[onto.parent_indptr[start]:onto.parent_indptr[stop]].astype(np.int64) - start
        child = np.repeat(np.arange(n_terms), np.diff(ptr))
        n_par = np.diff(ptr)
        parent_matrix = sparse.csr_matrix((np.ones(par.size, dtype=np.int32), (par, child)), shape=(n_terms, n_terms))
        have = (present @ parent_matrix).tocoo()
        full = have.data == n_par[have.col]
        n_pa = np.bincount(have.col[full], minlength=n_terms).astype(np.float64)
        n_pa[n_par == 0] = float(np.unique(r).size)  # roots: every protein of the namespace
        with np.errstate(divide="ignore", invalid="ignore"):
            value = -np.log2(n_t / n_pa)
        value[(n_t == 0) | ~np.isfinite(value)] = 0.0
        ia[start:stop] = value + 0.0  # no -0.0 in the file
    return ia


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bioreason_pro.information_accretion",
        description="Estimate GO information accretion from an annotation file and write cafaeval's "
                    "two-column 'term<TAB>ia' file.")
    parser.add_argument("--obo", required=True, help="the ontology (OBO, plain or gzipped)")
    parser.add_argument("--annotations", required=True, help="GAF, NCBI gene2go, or a TSV with a header")
    parser.add_argument("--out", required=True, help="IA file to write (.gz: gzipped)")
    parser.add_argument("--evidence", default=",".join(EXPERIMENTAL),
                        help="comma-separated evidence codes to keep, or 'all' (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        onto = load_ontology(args.obo)
        codes = None if args.evidence.strip().lower() == "all" else tuple(
            c.strip() for c in args.evidence.split(",") if c.strip())
        ann = read_annotations(args.annotations, onto, evidence=codes)
        ia = information_accretion(onto, ann)
        write_ia(args.out, onto, ia)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    c = ann.counts
    print(f"{args.out}: {len(onto)} terms, {int((ia > 0).sum())} with IA > 0; annotations: {c['rows']} rows, "
          f"{c['kept']} kept from {c['proteins']} proteins, {c['not_qualifier']} NOT, "
          f"{c['evidence_excluded']} other evidence, {c['obsolete']} obsolete, {c['unknown']} unknown, "
          f"{c['alt_replaced']} alt ids replaced")
    return 0


if __name__ == "__main__":
    sys.exit(main())
