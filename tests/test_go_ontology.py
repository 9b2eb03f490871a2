"""GO ontology loading and information accretion: a hand-made DAG with hand-computed values,
and the real GO 2022-07-01 / yeast GAF / packaged IA file."""
import gzip
import math
import time
from pathlib import Path

import numpy as np
import pytest

from bioreason_pro.cafa_files import CafaFileError, format_ia, read_ia, write_ia
from bioreason_pro.information_accretion import (AnnotationFileError, information_accretion, main as ia_main,
                                                 read_annotations)
from bioreason_pro.ontology import DEFAULT_OBO, OntologyError, load_ontology

FIXTURES = Path(__file__).parent / "fixtures" / "go"
PACKAGED_IA = DEFAULT_OBO.parent / "ia_human_exp.tsv.gz"

# R root; A, B children of R; D is_a A and B (a diamond), alt_id GO:0000099; P part_of A;
# N is_a D, never annotated; X only `regulates` A (not followed: a second root of BP);
# O obsolete; an MF root M with child M1; a Typedef (not a term).
SMALL_OBO = """format-version: 1.2
data-version: test/1
ontology: go

[Term]
id: GO:0000001
name: R
namespace: biological_process

[Term]
id: GO:0000002
name: A
namespace: biological_process
is_a: GO:0000001 ! R

[Term]
id: GO:0000003
name: B
namespace: biological_process
is_a: GO:0000001 ! R

[Term]
id: GO:0000004
name: D
namespace: biological_process
alt_id: GO:0000099
is_a: GO:0000002 ! A
is_a: GO:0000003 ! B

[Term]
id: GO:0000005
name: P
namespace: biological_process
relationship: part_of GO:0000002 ! A

[Term]
id: GO:0000006
name: N
namespace: biological_process
is_a: GO:0000004 ! D

[Term]
id: GO:0000007
name: X
namespace: biological_process
relationship: regulates GO:0000002 ! A

[Term]
id: GO:0000008
name: obsolete O
namespace: biological_process
is_obsolete: true

[Term]
id: GO:0000010
name: M
namespace: molecular_function

[Term]
id: GO:0000011
name: M1
namespace: molecular_function
is_a: GO:0000010 ! M

[Typedef]
id: part_of
name: part of
namespace: external
is_transitive: true
"""

# GAF 2.2 rows: DB, id, symbol, qualifier, GO, ref, evidence, with, aspect, ...
_GAF_ROWS = [
    ("p1", "enables", "GO:0000004", "IDA"),
    ("p2", "", "GO:0000002", "IMP"),
    ("p3", "", "GO:0000099", "EXP"),       # alt id of D
    ("p4", "", "GO:0000003", "IDA"),
    ("p4", "", "GO:0000005", "IPI"),
    ("p5", "NOT|involved_in", "GO:0000004", "IDA"),  # NOT: excluded
    ("p5", "", "GO:0000007", "IDA"),
    ("p6", "", "GO:0000002", "IEA"),       # not experimental
    ("p6", "", "GO:0000008", "IDA"),       # obsolete
    ("p6", "", "GO:0000011", "IDA"),
    ("p7", "", "GO:0009999", "IDA"),       # unknown
    ("p1", "", "GO:0000004", "TAS"),       # repeat of a kept annotation
]


def _gaf_text():
    lines = ["!gaf-version: 2.2"]
    for prot, qual, go, ev in _GAF_ROWS:
        lines.append("\t".join(["UniProtKB", prot, prot.upper(), qual, go, "PMID:1", ev, "", "P",
                                "name", "", "protein", "taxon:9606", "20220101", "TEST", "", ""]))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("small_go")
    (d / "small.obo").write_text(SMALL_OBO)
    (d / "small.obo.gz").write_bytes(gzip.compress(SMALL_OBO.encode()))
    (d / "ann.gaf").write_text(_gaf_text())
    return d


@pytest.fixture(scope="module")
def go():
    return load_ontology()


def _ids(onto, idx):
    return sorted(onto.ids[int(i)] for i in idx)


def test_small_ontology_terms_edges_alt_obsolete(small):
    onto = load_ontology(small / "small.obo")
    gz = load_ontology(small / "small.obo.gz", cache=False)
    assert gz.ids == onto.ids and np.array_equal(gz.anc, onto.anc)
    assert onto.namespaces == ("biological_process", "molecular_function")
    assert len(onto) == 9 and onto.data_version == "test/1"   # 7 BP + 2 MF; obsolete and Typedef are not terms
    assert onto.resolve("GO:0000099") == ((onto.index["GO:0000004"],), "alt")
    assert onto.resolve("GO:0000008") == ((), "obsolete")
    assert onto.resolve("part_of") == ((), "unknown")
    i = onto.index
    assert _ids(onto, onto.propagate([i["GO:0000006"]])) == ["GO:0000001", "GO:0000002", "GO:0000003",
                                                              "GO:0000004", "GO:0000006"]
    assert _ids(onto, onto.propagate([i["GO:0000005"]])) == ["GO:0000001", "GO:0000002", "GO:0000005"]  # part_of
    assert _ids(onto, onto.propagate([i["GO:0000007"]])) == ["GO:0000007"]  # regulates is not followed
    assert _ids(onto, onto.propagate([i["GO:0000011"], i["GO:0000002"]])) == ["GO:0000001", "GO:0000002",
                                                                              "GO:0000010", "GO:0000011"]


def test_ia_equals_hand_computed_values(small):
    onto = load_ontology(small / "small.obo")
    ann = read_annotations(small / "ann.gaf", onto)
    assert ann.counts == {"rows": 12, "not_qualifier": 1, "evidence_excluded": 1, "obsolete": 1, "unknown": 1,
                          "alt_replaced": 1, "kept": 8, "proteins": 6}
    ia = information_accretion(onto, ann)
    got = {t: ia[onto.index[t]] for t in onto.ids}
    # propagated BP sets: p1 {D,A,B,R}, p2 {A,R}, p3 {D,A,B,R}, p4 {B,P,A,R}, p5 {X}; 5 BP proteins
    expect = {
        "GO:0000001": -math.log2(4 / 5),   # root: N(R)=4 of the 5 proteins with BP annotations
        "GO:0000002": 0.0,                 # N(A)=4, N(R)=4
        "GO:0000003": -math.log2(3 / 4),   # N(B)=3, N(R)=4
        "GO:0000004": -math.log2(2 / 3),   # diamond: N(D)=2, proteins with both A and B = 3
        "GO:0000005": -math.log2(1 / 4),   # part_of A: N(P)=1, N(A)=4
        "GO:0000006": 0.0,                 # never annotated
        "GO:0000007": -math.log2(1 / 5),   # X is a root (regulates not followed)
        "GO:0000010": 0.0,                 # MF: one protein (p6)
        "GO:0000011": 0.0,
    }
    for t, v in expect.items():
        assert got[t] == pytest.approx(v, abs=1e-12), t
    # every code counts with evidence=None: p6's IEA row adds A -> 5 BP proteins with A
    ia_all = information_accretion(onto, read_annotations(small / "ann.gaf", onto, evidence=None))
    assert ia_all[onto.index["GO:0000003"]] == pytest.approx(-math.log2(3 / 5))


def test_ia_file_round_trip_and_cli(small, tmp_path, capsys):
    onto = load_ontology(small / "small.obo")
    ia = information_accretion(onto, read_annotations(small / "ann.gaf", onto))
    write_ia(tmp_path / "ia.tsv", onto, ia)
    back, counts = read_ia(tmp_path / "ia.tsv", onto)
    assert np.array_equal(back, ia) and counts["terms"] == 9
    assert (tmp_path / "ia.tsv").read_text().splitlines()[0].split("\t")[0] == "GO:0000001"
    assert ia_main(["--obo", str(small / "small.obo"), "--annotations", str(small / "ann.gaf"),
                    "--out", str(tmp_path / "ia2.tsv.gz")]) == 0
    assert "1 NOT" in capsys.readouterr().out
    assert np.array_equal(read_ia(tmp_path / "ia2.tsv.gz", onto)[0], ia)
    (tmp_path / "bad.tsv").write_text("GO:0000001\t0.5\nGO:0000002 x\n")
    with pytest.raises(CafaFileError, match=r"bad.tsv, line 2, field 2"):
        read_ia(tmp_path / "bad.tsv", onto)


def test_annotation_file_errors(small, tmp_path):
    onto = load_ontology(small / "small.obo")
    (tmp_path / "noev.tsv").write_text("protein\tgo_id\np1\tGO:0000002\n")
    with pytest.raises(AnnotationFileError, match="no evidence column"):
        read_annotations(tmp_path / "noev.tsv", onto)
    assert read_annotations(tmp_path / "noev.tsv", onto, evidence=None).counts["kept"] == 1
    (tmp_path / "short.gaf").write_text("!gaf-version: 2.2\nUniProtKB\tp1\tP1\n")
    with pytest.raises(AnnotationFileError, match=r"short.gaf, line 2: 3 tab-separated fields"):
        read_annotations(tmp_path / "short.gaf", onto)
    (tmp_path / "cycle.obo").write_text("[Term]\nid: GO:1\nnamespace: x\nis_a: GO:2\n\n"
                                        "[Term]\nid: GO:2\nnamespace: x\nis_a: GO:1\n")
    with pytest.raises(OntologyError, match="cycle"):
        load_ontology(tmp_path / "cycle.obo", cache=False)
    with pytest.raises(OntologyError, match="cannot read"):
        load_ontology(tmp_path / "missing.obo")


def test_real_go_counts_and_fast_propagation(go):
    assert go.data_version == "releases/2022-07-01"
    sizes = {ns: go.namespace_range(ns)[1] - go.namespace_range(ns)[0] for ns in go.namespaces}
    assert sizes == {"biological_process": 28140, "molecular_function": 11238, "cellular_component": 4180}
    assert len(go.obsolete) == 3910 and len(go.alt) == 3450
    assert go.parents.size == 70058 + 6997  # is_a + part_of, no regulates
    # every active term reaches its namespace's root
    roots = {"biological_process": "GO:0008150", "molecular_function": "GO:0003674",
             "cellular_component": "GO:0005575"}
    for ns, root in roots.items():
        start, stop = go.namespace_range(ns)
        r = go.index[root]
        has_root = np.zeros(stop - start, bool)
        for t in range(start, stop):
            a = go.anc[go.anc_indptr[t]:go.anc_indptr[t + 1]]
            has_root[t - start] = r in a
        assert has_root.all(), ns
    rng = np.random.default_rng(0)
    sets = [rng.integers(0, len(go), 20) for _ in range(200)]
    t0 = time.perf_counter()
    for s in sets:
        go.propagate(s)
    per_set = (time.perf_counter() - t0) / len(sets)
    assert per_set < 1e-3, f"propagating 20 terms took {per_set * 1e6:.0f} us"


def test_packaged_ia_and_yeast_gaf(go):
    ia, counts = read_ia(PACKAGED_IA, go)
    assert counts["terms"] == len(go) and int((ia > 0).sum()) == 11787
    for root in ("GO:0008150", "GO:0003674", "GO:0005575"):
        assert ia[go.index[root]] == 0.0
    assert ia[go.index["GO:0005515"]] == pytest.approx(0.0841223, abs=1e-6)  # protein binding: generic
    assert format_ia(go, ia).count("\n") == len(go)
    ann = read_annotations(FIXTURES / "yeast_goa.gaf.gz", go)
    c = ann.counts
    assert c["rows"] == 887 and c["not_qualifier"] == 0 and c["kept"] == 347
    assert c["evidence_excluded"] == 887 - 347 - c["obsolete"] - c["unknown"]
    assert c["obsolete"] == 6 and c["alt_replaced"] == 2
    yeast = information_accretion(go, ann)
    assert (yeast >= 0).all() and yeast[go.index["GO:0008150"]] == 0.0 and (yeast > 0).sum() == 169
