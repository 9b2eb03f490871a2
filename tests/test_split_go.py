"""`biopost data split-go`: each ID/OOD rule keeps OOD val and OOD test disjoint (by group and by
protein) and reports per-split protein and term counts; the real Swiss-Prot mini benchmark is
built from the committed fixture and assignment file."""
import gzip
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

from bioreason_pro.split_go import SPLITS, SplitError, build_parser, make_split, organism_key

FIXTURES = ROOT / "tests/fixtures/go"
YEAST_GAF = FIXTURES / "yeast_goa.gaf.gz"
MF, CC, BP = "GO:0003824", "GO:0005737", "GO:0008152"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def split(tmp_path, *args):
    out = tmp_path / "out"
    report = make_split(build_parser().parse_args(["--out", str(out), *map(str, args)]))
    rows = {s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()] for s in SPLITS}
    return report, rows


def ids(rows):
    return {r["protein_id"] for r in rows}


def assert_disjoint_and_counted(report, rows, group):
    all_ids = [r["protein_id"] for s in SPLITS for r in rows[s]]
    assert len(all_ids) == len(set(all_ids))
    val_groups, test_groups = {group(r) for r in rows["ood_val"]}, {group(r) for r in rows["ood_test"]}
    id_groups = {group(r) for s in ("train", "id_val", "id_test") for r in rows[s]}
    assert rows["ood_val"] and rows["ood_test"] and rows["train"]
    assert not val_groups & test_groups and not (val_groups | test_groups) & id_groups
    assert report["disjoint"]["ood_val_ood_test_groups_disjoint"] and report["disjoint"]["ood_groups_in_id"] == []
    for s in SPLITS:
        c = report["counts"][s]
        assert c["proteins"] == len(rows[s])
        assert c["terms"] == len({t for r in rows[s] for k in ("go_mf", "go_bp", "go_cc") for t in r[k]})


def organism_rows(n=60, organisms=8, seed=0):
    rng = random.Random(seed)
    return [{"protein_id": f"P{i:03d}", "sequence": "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(30)),
             "organism": f"Organism {i % organisms} (strain)", "taxon_id": str(1000 + i % organisms),
             "go_mf": [MF], "go_bp": [BP] if i % 2 else [], "go_cc": [CC]} for i in range(n)]


def test_organism_rule_named(tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", organism_rows())
    report, rows = split(tmp_path, "--data", data, "--rule", "organism",
                         "--ood_val_organisms", "Organism 1,1002", "--ood_test_organisms", "Organism 3 (strain)")
    assert_disjoint_and_counted(report, rows, organism_key)
    assert {organism_key(r) for r in rows["ood_val"]} == {"Organism 1", "Organism 2"}
    assert {organism_key(r) for r in rows["ood_test"]} == {"Organism 3"}
    assert report["ood_groups"] == {"ood_val": ["Organism 1", "Organism 2"], "ood_test": ["Organism 3"]}
    lines = (tmp_path / "out/assignments.tsv").read_text().splitlines()
    assert lines[0] == "protein_id\tsplit\trule\tseed\tgroup" and len(lines) == 61


def test_organism_rule_random_is_seeded_and_named_overlap_refused(tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", organism_rows(organisms=12))
    a, rows_a = split(tmp_path, "--data", data, "--rule", "organism", "--ood_val_fraction", "0.2",
                      "--ood_test_fraction", "0.2", "--seed", "3")
    assert_disjoint_and_counted(a, rows_a, organism_key)
    b, rows_b = split(tmp_path, "--data", data, "--rule", "organism", "--ood_val_fraction", "0.2",
                      "--ood_test_fraction", "0.2", "--seed", "3")
    assert {s: ids(rows_a[s]) for s in SPLITS} == {s: ids(rows_b[s]) for s in SPLITS}
    with pytest.raises(SplitError, match="named for both"):
        split(tmp_path, "--data", data, "--rule", "organism", "--ood_val_organisms", "Organism 1",
              "--ood_test_organisms", "Organism 1")


def family_rows(families=12, members=4, length=120, seed=0):
    """Families of near-identical sequences (about 5% of residues changed per member)."""
    rng = random.Random(seed)
    rows = []
    for f in range(families):
        base = [rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(length)]
        for m in range(members):
            seq = list(base)
            for pos in rng.sample(range(length), length // 20):
                seq[pos] = rng.choice("ACDEFGHIKLMNPQRSTVWY")
            rows.append({"protein_id": f"F{f:02d}M{m}", "sequence": "".join(seq), "organism": "Homo sapiens",
                         "go_mf": [MF], "go_bp": [], "go_cc": [CC], "family": f"fam{f:02d}"})
    return rows


def test_family_rule_from_cluster_tsv(tmp_path):
    rows_in = family_rows()
    lone = dict(family_rows(families=1, seed=9)[0], protein_id="LONE", family="lone")
    data = write_jsonl(tmp_path / "rows.jsonl", rows_in + [lone])
    tsv = tmp_path / "clusters.tsv"
    # mmseqs createtsv layout: representative <tab> member; LONE is not in it (its own cluster)
    tsv.write_text("".join(f"{r['family']}M0\t{r['protein_id']}\n" for r in rows_in))
    rows_in.append(lone)
    report, rows = split(tmp_path, "--data", data, "--rule", "family", "--clusters", tsv,
                         "--ood_val_fraction", "0.2", "--ood_test_fraction", "0.2")
    fam = {r["protein_id"]: r["family"] for r in rows_in}
    assert_disjoint_and_counted(report, rows, lambda r: fam[r["protein_id"]])
    assert report["notes"]["unclustered_proteins"] == 1 and report["notes"]["clusters"] == 13


def test_family_rule_bad_cluster_tsv_is_named(tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", family_rows(families=2))
    tsv = tmp_path / "clusters.tsv"
    tsv.write_text("c1\tF00M0\nc1 F00M1\n")
    from biopost.data.io import DataError
    with pytest.raises(DataError, match="clusters.tsv: line 2: expected two tab-separated columns"):
        split(tmp_path, "--data", data, "--rule", "family", "--clusters", tsv)


@pytest.mark.skipif(shutil.which("mmseqs") is None, reason="mmseqs not installed (Debian/Ubuntu: apt install mmseqs2)")
def test_family_rule_with_mmseqs(tmp_path):
    rows_in = family_rows()
    data = write_jsonl(tmp_path / "rows.jsonl", rows_in)
    report, rows = split(tmp_path, "--data", data, "--rule", "family", "--mmseqs", "true", "--min_seq_id", "0.5",
                         "--ood_val_fraction", "0.2", "--ood_test_fraction", "0.2")
    fam = {r["protein_id"]: r["family"] for r in rows_in}
    assert_disjoint_and_counted(report, rows, lambda r: fam[r["protein_id"]])
    assert report["notes"]["clusters"] == 12 and report["notes"]["unclustered_proteins"] == 0


def test_family_rule_without_mmseqs_says_how_to_install(tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "rows.jsonl", family_rows(families=2))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SplitError, match="apt install mmseqs2"):
        split(tmp_path, "--data", data, "--rule", "family", "--mmseqs", "true")


def yeast_rows():
    """One row per protein of the real yeast GAF (sequences are placeholders: the GAF has none)."""
    with gzip.open(YEAST_GAF, "rt") as f:
        proteins = sorted({line.split("\t")[1] for line in f if not line.startswith("!")})
    rng = random.Random(0)
    return [{"protein_id": p, "sequence": "M" + "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(40)),
             "organism": "Saccharomyces cerevisiae", "go_mf": [], "go_bp": [], "go_cc": []} for p in proteins]


def test_time_rule_on_real_yeast_gaf(tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", yeast_rows())
    report, rows = split(tmp_path, "--data", data, "--rule", "time", "--annotations", YEAST_GAF,
                         "--val_date", "2003-12-31", "--test_date", "20071231", "--evidence", "exp",
                         "--skip_invalid", "true")
    window = {r["protein_id"]: s for s in SPLITS for r in rows[s]}
    assert_disjoint_and_counted(report, rows, lambda r: window[r["protein_id"]] if window[r["protein_id"]]
                                .startswith("ood") else "id")
    # first kept (experimental) annotation date decides the split; gold stops at the split's cut
    dated = {}
    with gzip.open(YEAST_GAF, "rt") as f:
        for line in f:
            if line.startswith("!"):
                continue
            c = line.split("\t")
            if c[6] in ("EXP", "IDA", "IPI", "IMP", "IGI", "IEP", "TAS", "IC"):
                dated.setdefault(c[1], []).append(c[13])
    for s, cut_lo, cut_hi in (("train", "0", "20031231"), ("ood_val", "20031231", "20071231"),
                              ("ood_test", "20071231", "99999999")):
        for r in rows[s]:
            assert cut_lo < min(dated[r["protein_id"]]) <= cut_hi
    n = report["notes"]
    assert n["annotations"]["annotations"] == 887 and n["annotations"]["dropped_evidence"] > 0
    assert n["time"]["rows_without_annotations"] > 0   # proteins with ND / IEA annotations only
    assert report["counts"]["ood_val"]["proteins"] > 0 and report["counts"]["ood_test"]["proteins"] > 0


def test_time_rule_bad_dates(tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", yeast_rows()[:5])
    with pytest.raises(SplitError, match="must be before"):
        split(tmp_path, "--data", data, "--rule", "time", "--annotations", YEAST_GAF,
              "--val_date", "2008-01-01", "--test_date", "2003-01-01")
    bad = tmp_path / "bad.gaf"
    lines = gzip.open(YEAST_GAF, "rt").read().splitlines()
    first = next(i for i, line in enumerate(lines) if not line.startswith("!"))
    cols = lines[first].split("\t")
    cols[13] = "2003-01-01"
    lines[first] = "\t".join(cols)
    bad.write_text("\n".join(lines) + "\n")
    from biopost.data.io import DataError
    with pytest.raises(DataError, match=rf"bad.gaf: line {first + 1}: field 14 \(date\)"):
        split(tmp_path, "--data", data, "--rule", "time", "--annotations", bad,
              "--val_date", "2003-01-01", "--test_date", "2008-01-01")


def test_assignment_file_reproduces_a_split(tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", organism_rows())
    _, rows = split(tmp_path, "--data", data, "--rule", "organism", "--ood_val_fraction", "0.2",
                    "--ood_test_fraction", "0.2")
    table = tmp_path / "assign.tsv"
    shutil.copy(tmp_path / "out/assignments.tsv", table)
    shutil.rmtree(tmp_path / "out")
    report, again = split(tmp_path, "--data", data, "--assignments", table)
    assert {s: ids(rows[s]) for s in SPLITS} == {s: ids(again[s]) for s in SPLITS}
    assert report["rule"] == "organism" and report["disjoint"]["ood_groups_in_id"] == []


def test_swissprot_mini_benchmark(tmp_path):
    from bioreason_pro.swissprot_benchmark import ASSIGNMENTS, FIXTURE, build
    import hashlib
    # committed unmodified: the fixture's published md5 (../shared/data/README.md)
    assert hashlib.md5(FIXTURE.read_bytes()).hexdigest() == "575980dfe70b32e82e6fbb0a12924717"
    report = build(tmp_path / "exp")
    v = report["validation"]["all"]
    assert v["n_rows"] == 130 and v["n_valid"] == 40
    assert v["skipped"] == {"field 'go_mf_exp': no gold GO term in go_mf_exp / go_bp_exp / go_cc_exp": 90}
    assert v["alt_mapped"] == 10 and v["obsolete_dropped"] == 7
    counts = {s: report["counts"][s]["proteins"] for s in SPLITS}
    assert counts == {"train": 17, "id_val": 4, "ood_val": 7, "id_test": 4, "ood_test": 8}
    assert not set(report["ood_groups"]["ood_val"]) & set(report["ood_groups"]["ood_test"])
    assert report["disjoint"]["ood_groups_in_id"] == [] and report["rule"] == "organism"
    rows = [json.loads(line) for s in SPLITS for line in (tmp_path / f"exp/{s}.jsonl").read_text().splitlines()]
    raw = {json.loads(line)["protein_id"]: json.loads(line) for line in gzip.open(FIXTURE, "rt")}
    for r in rows:  # gold = the experimental columns, never the all-evidence ones or go_pred
        exp = set(raw[r["protein_id"]]["go_mf_exp"] + raw[r["protein_id"]]["go_bp_exp"] + raw[r["protein_id"]]["go_cc_exp"])
        alt = raw[r["protein_id"]]["go_alt_to_primary"]
        assert set(r["go_mf"] + r["go_bp"] + r["go_cc"]) <= {alt.get(t, t) for t in exp}
    assert len(ASSIGNMENTS.read_text().splitlines()) == 41
    report_all = build(tmp_path / "all", evidence="all")
    assert report_all["notes"]["not_in_assignments"] == 86
    assert {s: report_all["counts"][s]["proteins"] for s in SPLITS} == counts
    assert report_all["counts"]["train"]["annotations"] > report["counts"]["train"]["annotations"]


def test_cli_entry_and_usage(tmp_path):
    data = write_jsonl(tmp_path / "rows.jsonl", organism_rows())
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "biopost.cli", "data", "split-go", "--data", str(data), "--out",
                        str(tmp_path / "o"), "--rule", "organism", "--ood_val_organisms", "Organism 1",
                        "--ood_test_organisms", "Organism 2"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "ood_test: 8 proteins" in r.stdout and (tmp_path / "o/split_report.json").is_file()
    r = subprocess.run([sys.executable, "-m", "biopost.cli", "data", "split-go", "--data", str(data), "--out",
                        str(tmp_path / "o2")], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "exactly one of --rule and --assignments" in r.stderr
    assert not Path(tmp_path / "o2").exists()
