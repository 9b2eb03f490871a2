"""`biopost data split-go`: validate GO protein rows and split them by a named ID/OOD rule.

    biopost data split-go --data ROWS --out DIR --rule organism [--ood_val_organisms A,B --ood_test_organisms C]
    biopost data split-go --data ROWS --out DIR --rule family --clusters clusters.tsv   (or --mmseqs)
    biopost data split-go --data ROWS --out DIR --rule time --annotations goa.gaf.gz --val_date 2005-01-01 --test_date 2008-01-01
    biopost data split-go --data ROWS --out DIR --assignments assignments.tsv

Writes `DIR/{train,id_val,ood_val,id_test,ood_test}.jsonl` (the task's row schema), an
assignment file `DIR/assignments.tsv` (protein_id, split, rule, seed, group) and
`DIR/split_report.json` (rule, options, per-split protein / term / annotation / group counts,
the validation counts, the disjointness checks). Rows are validated first
(`bioreason_pro.protein_data`): a bad row is an error naming file, row and field, or with
`--skip_invalid true` skipped and counted. A source that already has splits (a directory of split
files, a HF dataset) is pooled and split again.

The rules (each holds out *groups*; a group is in exactly one of ood_val, ood_test or the ID
pool, so OOD val and OOD test never share a group, and no protein is in two splits):

- `organism`: a group is an organism (the `organism` field up to its first " (", so
  "Homo sapiens (Human)" is "Homo sapiens"; `--ood_*_organisms` also match `taxon_id`). Named
  with `--ood_val_organisms` / `--ood_test_organisms`, or drawn at random (seeded) until each OOD
  split holds about `--ood_val_fraction` / `--ood_test_fraction` of the proteins (a group larger
  than what is still needed is passed over, so one dominant organism stays in ID).
- `family`: a group is a sequence cluster: `--clusters TSV` (two columns `cluster protein_id`,
  as `mmseqs createtsv` writes: representative then member), or `--mmseqs` to run MMseqs2's
  `easy-cluster` (`--min_seq_id`, `--coverage`; Debian/Ubuntu: `apt install mmseqs2`). A protein
  missing from the TSV is its own cluster (counted). Held-out clusters are drawn as for organisms.
- `time`: a CAFA-style time cut on a per-annotation date: `--annotations` is a GAF 2.x file
  (column 2 the protein id, 4 qualifier, 5 GO id, 7 evidence, 9 aspect, 14 date YYYYMMDD).
  A protein whose first (kept) annotation is on or before `--val_date` is ID (gold: its
  annotations up to `--val_date`); after `--val_date` and up to `--test_date`: ood_val (gold up
  to `--test_date`); after `--test_date`: ood_test (all its annotations). The gold columns of the
  rows are replaced by the GAF's. NOT-qualified annotations and, with `--evidence exp`, those
  without an experimental code (EXP IDA IPI IMP IGI IEP TAS IC) are dropped and counted.

The ID pool is split at random (seeded) into train / id_val / id_test by `--id_val_fraction`
and `--id_test_fraction`.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from biopost.data.io import DataError
from biopost.errors import UserError

SPLITS = ("train", "id_val", "ood_val", "id_test", "ood_test")
RULES = ("organism", "family", "time")
EXPERIMENTAL = ("EXP", "IDA", "IPI", "IMP", "IGI", "IEP", "TAS", "IC")
ASPECT_COLUMN = {"F": "go_mf", "P": "go_bp", "C": "go_cc"}


class SplitError(UserError, ValueError):
    """A split that cannot be made as asked (bad option, missing tool, empty train)."""


# --- groups ---------------------------------------------------------------------------------------

def organism_key(row: dict) -> str:
    return str(row.get("organism") or "").split(" (")[0].strip() or "(no organism)"


def _match_organisms(rows: list[dict], names: list[str], flag: str) -> set[str]:
    keys = set()
    for name in names:
        hits = {organism_key(r) for r in rows
                if name in (organism_key(r), str(r.get("organism", "")), str(r.get("taxon_id", "")))}
        if not hits:
            raise SplitError(f"{flag}: no protein of organism {name!r} (known: "
                             f"{', '.join(sorted({organism_key(r) for r in rows})[:12])} ...)")
        keys |= hits
    return keys


def read_clusters(path: Path) -> dict[str, str]:
    """protein_id -> cluster from a two-column TSV (mmseqs createtsv: representative, member)."""
    out: dict[str, str] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the cluster TSV ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
            raise DataError(f"{path}: line {n}: expected two tab-separated columns 'cluster protein_id', got {line!r:.80}")
        cluster, member = parts[0].strip(), parts[1].strip()
        if member in out and out[member] != cluster:
            raise DataError(f"{path}: line {n}: protein {member} is in two clusters ({out[member]}, {cluster})")
        out[member] = cluster
    return out


def run_mmseqs(rows: list[dict], min_seq_id: float, coverage: float, threads: int = 1) -> dict[str, str]:
    """Cluster the rows' sequences with `mmseqs easy-cluster`; protein_id -> representative."""
    exe = shutil.which("mmseqs")
    if exe is None:
        raise SplitError("--mmseqs: the mmseqs executable is not on PATH (Debian/Ubuntu: apt install mmseqs2; "
                         "or pass --clusters with a TSV of 'cluster protein_id')")
    with tempfile.TemporaryDirectory(prefix="split_go_mmseqs_") as tmp:
        fasta = Path(tmp) / "in.fasta"
        fasta.write_text("".join(f">{r['protein_id']}\n{r['sequence']}\n" for r in rows))
        cmd = [exe, "easy-cluster", str(fasta), str(Path(tmp) / "res"), str(Path(tmp) / "work"),
               "--min-seq-id", str(min_seq_id), "-c", str(coverage), "--threads", str(threads), "-v", "1"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SplitError(f"mmseqs easy-cluster failed (exit {proc.returncode}): {proc.stderr[-500:]}")
        return read_clusters(Path(tmp) / "res_cluster.tsv")


def pick_groups(sizes: dict[str, int], target: int, rng: random.Random, exclude: set[str]) -> set[str]:
    """Groups drawn in a seeded random order until their proteins reach `target`; a group
    larger than what is still needed is passed over."""
    chosen: set[str] = set()
    total = 0
    order = sorted(g for g in sizes if g not in exclude)
    rng.shuffle(order)
    for g in order:
        if total >= target:
            break
        if total + sizes[g] <= max(target, 1):
            chosen.add(g)
            total += sizes[g]
    return chosen


# --- the time rule --------------------------------------------------------------------------------

def _date(value: str, flag: str) -> str:
    digits = value.replace("-", "")
    if not re.fullmatch(r"\d{8}", digits):
        raise SplitError(f"{flag}: expected a date YYYYMMDD or YYYY-MM-DD, got {value!r}")
    return digits


def read_gaf(path: Path, onto, evidence: str = "all") -> tuple[dict[str, list[tuple[str, str, str]]], Counter]:
    """protein -> [(date, gold column, primary GO id)] from a GAF 2.x file, and the counts of
    what was dropped (NOT qualifier, evidence, obsolete, unknown)."""
    from bioreason_pro.ontology import open_text
    from bioreason_pro.protein_data import NAMESPACE_OF_COLUMN
    out: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    counts: Counter = Counter()
    try:
        fh = open_text(path)
    except UserError as e:
        raise DataError(f"{path}: cannot read the annotation file ({e})") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if line.startswith("!") or not line.strip():
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 15:
                raise DataError(f"{path}: line {n}: a GAF line has at least 15 tab-separated columns, got {len(cols)}")
            protein, qualifier, go_id, code, aspect, date = cols[1], cols[3], cols[4], cols[6], cols[8], cols[13]
            if not re.fullmatch(r"\d{8}", date):
                raise DataError(f"{path}: line {n}: field 14 (date): expected YYYYMMDD, got {date!r:.20}")
            if not re.fullmatch(r"GO:\d{7}", go_id):
                raise DataError(f"{path}: line {n}: field 5 (GO id): malformed GO id {go_id!r:.20}")
            if aspect not in ASPECT_COLUMN:
                raise DataError(f"{path}: line {n}: field 9 (aspect): expected F, P or C, got {aspect!r:.10}")
            counts["annotations"] += 1
            if "NOT" in qualifier.split("|"):
                counts["dropped_not_qualifier"] += 1
                continue
            if evidence == "exp" and code not in EXPERIMENTAL:
                counts["dropped_evidence"] += 1
                continue
            terms, status = onto.resolve(go_id)
            if status in ("obsolete", "unknown"):
                counts[f"dropped_{status}"] += 1
                continue
            if status == "alt":
                counts["alt_mapped"] += 1
            col = ASPECT_COLUMN[aspect]
            for t in terms:
                if onto.namespace(t) != NAMESPACE_OF_COLUMN[col]:
                    counts["dropped_aspect_mismatch"] += 1
                    continue
                out[protein].append((date, col, onto.ids[t]))
            counts["kept"] += 1
    return dict(out), counts


def time_split(rows: list[dict], annotations: dict, val_date: str, test_date: str) -> tuple[dict[str, str], list[dict], Counter]:
    """protein -> 'id' / 'ood_val' / 'ood_test' by its first annotation date; rows with gold
    from the annotation windows; counts."""
    if val_date >= test_date:
        raise SplitError(f"--val_date ({val_date}) must be before --test_date ({test_date})")
    where, out, counts = {}, [], Counter()
    for row in rows:
        anns = annotations.get(row["protein_id"])
        if not anns:
            counts["rows_without_annotations"] += 1
            continue
        first = min(d for d, _, _ in anns)
        if first <= val_date:
            where[row["protein_id"]], cut = "id", val_date
        elif first <= test_date:
            where[row["protein_id"]], cut = "ood_val", test_date
        else:
            where[row["protein_id"]], cut = "ood_test", "99999999"
        gold = {c: [] for c in ASPECT_COLUMN.values()}
        for d, col, go_id in sorted(anns):
            if d <= cut and go_id not in gold[col]:
                gold[col].append(go_id)
        counts["annotations_after_cut"] += sum(1 for d, _, _ in anns if d > cut)
        out.append(dict(row, **gold))
    return where, out, counts


# --- assembling the splits ------------------------------------------------------------------------

def assign(rows: list[dict], group_of: dict[str, str], ood_val: set[str], ood_test: set[str],
           id_val_fraction: float, id_test_fraction: float, rng: random.Random) -> dict[str, str]:
    """protein -> split: OOD by group, the ID pool split at random."""
    out = {}
    pool = []
    for r in rows:
        g = group_of[r["protein_id"]]
        if g in ood_val:
            out[r["protein_id"]] = "ood_val"
        elif g in ood_test:
            out[r["protein_id"]] = "ood_test"
        else:
            pool.append(r["protein_id"])
    pool.sort()
    rng.shuffle(pool)
    n_val, n_test = round(id_val_fraction * len(pool)), round(id_test_fraction * len(pool))
    for i, pid in enumerate(pool):
        out[pid] = "id_val" if i < n_val else "id_test" if i < n_val + n_test else "train"
    return out


def read_assignments(path: Path) -> dict[str, dict]:
    """protein_id -> {split, rule, seed, group} from an assignment TSV (header line)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the assignment file ({e})") from None
    if not lines or lines[0].split("\t")[:2] != ["protein_id", "split"]:
        raise DataError(f"{path}: line 1: expected a header starting 'protein_id<TAB>split'")
    header = lines[0].split("\t")
    out = {}
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        rec = dict(zip(header, line.split("\t")))
        if rec.get("split") not in SPLITS:
            raise DataError(f"{path}: line {n}: field 'split': expected one of {', '.join(SPLITS)}, got {rec.get('split')!r}")
        if rec["protein_id"] in out:
            raise DataError(f"{path}: line {n}: protein {rec['protein_id']} assigned twice")
        out[rec["protein_id"]] = rec
    return out


def split_counts(rows_by_split: dict[str, list[dict]], group_of: dict[str, str]) -> dict:
    from bioreason_pro.protein_data import GOLD_COLUMNS
    out = {}
    for split in SPLITS:
        rows = rows_by_split.get(split, [])
        terms = Counter(t for r in rows for c in GOLD_COLUMNS for t in r[c])
        out[split] = {"proteins": len(rows), "terms": len(terms), "annotations": sum(terms.values()),
                      "per_aspect_terms": {c: len({t for r in rows for t in r[c]}) for c in GOLD_COLUMNS},
                      "groups": len({group_of.get(r["protein_id"], "?") for r in rows}),
                      "organisms": len({organism_key(r) for r in rows})}
    return out


def check_disjoint(rows_by_split: dict[str, list[dict]], group_of: dict[str, str]) -> dict:
    """Disjointness facts; raises if a protein is in two splits or OOD val and test share a group."""
    seen: dict[str, str] = {}
    for split, rows in rows_by_split.items():
        for r in rows:
            if r["protein_id"] in seen:
                raise SplitError(f"protein {r['protein_id']} in both {seen[r['protein_id']]} and {split}")
            seen[r["protein_id"]] = split
    groups = {s: {group_of.get(r["protein_id"], r["protein_id"]) for r in rows} for s, rows in rows_by_split.items()}
    id_groups = groups.get("train", set()) | groups.get("id_val", set()) | groups.get("id_test", set())
    shared_val_test = groups.get("ood_val", set()) & groups.get("ood_test", set())
    if shared_val_test:
        raise SplitError(f"ood_val and ood_test share group(s) {sorted(shared_val_test)[:5]}")
    return {"proteins_disjoint": True, "ood_val_ood_test_groups_disjoint": True,
            "ood_groups_in_id": sorted((groups.get("ood_val", set()) | groups.get("ood_test", set())) & id_groups)}


def make_split(args) -> dict:
    """Everything `main` does, returning the report (also written to split_report.json)."""
    from biopost.files import ensure_dir, write_json_atomic, write_text_atomic

    from bioreason_pro.ontology import load_ontology
    from bioreason_pro.protein_data import load_protein_rows, validate_protein_rows

    onto = load_ontology(args.obo)
    rng = random.Random(args.seed)
    out_dir = Path(args.out)
    notes: dict = {}
    if args.rule == "time":
        if not (args.annotations and args.val_date and args.test_date):
            raise SplitError("--rule time needs --annotations (a GAF file), --val_date and --test_date")
        from bioreason_pro.protein_data import SEQUENCE_SCHEMA, read_raw
        raw = read_raw(args.data)
        items = [x for split_items in raw.values() for x in split_items]
        # generic pass (sequence) first; gold comes from the GAF, then the GO pass checks it
        from biopost.data.schema import Truncation, validate_rows
        seq_rows, generic = validate_rows(items, SEQUENCE_SCHEMA, "all",
                                          {"protein": Truncation(args.max_length_protein, 0)}, args.skip_invalid)
        val_date, test_date = _date(args.val_date, "--val_date"), _date(args.test_date, "--test_date")
        annotations, gaf_counts = read_gaf(Path(args.annotations), onto, args.evidence)
        where, dated_rows, time_counts = time_split(seq_rows, annotations, val_date, test_date)
        rows, report = validate_protein_rows([(r, _Src(r)) for r in dated_rows], "all", onto,
                                             skip_invalid=args.skip_invalid)
        report.skipped.update(generic.skipped)
        report.n_rows = generic.n_rows
        report.truncated = sum(generic.truncated.values())
        reports = {"all": report}
        group_of = {r["protein_id"]: where[r["protein_id"]] for r in rows}
        ood_val, ood_test = {"ood_val"}, {"ood_test"}
        notes.update(annotations=dict(gaf_counts), time=dict(time_counts), val_date=val_date, test_date=test_date)
    else:
        loaded, reports = load_protein_rows(args.data, onto=onto, max_length=args.max_length_protein,
                                            evidence=args.evidence, skip_invalid=args.skip_invalid)
        rows = [r for split_rows in loaded.values() for r in split_rows]
    dup = [p for p, n in Counter(r["protein_id"] for r in rows).items() if n > 1]
    if dup:
        raise DataError(f"{args.data}: protein_id {dup[0]} occurs {Counter(r['protein_id'] for r in rows)[dup[0]]} "
                        f"times ({len(dup)} duplicated ids); each protein must be one row")
    n = len(rows)
    if args.assignments:
        table = read_assignments(Path(args.assignments))
        missing = [r["protein_id"] for r in rows if r["protein_id"] not in table]
        notes["not_in_assignments"] = len(missing)
        notes["assignments_not_in_data"] = len(set(table) - {r["protein_id"] for r in rows})
        rows = [r for r in rows if r["protein_id"] in table]
        split_of = {pid: rec["split"] for pid, rec in table.items()}
        group_of = {pid: rec.get("group") or pid for pid, rec in table.items()}
        rule = sorted({rec.get("rule", "?") for rec in table.values()})
        rule = rule[0] if len(rule) == 1 else ",".join(rule)
        seed = sorted({rec.get("seed", "?") for rec in table.values()})
    else:
        rule, seed = args.rule, args.seed
        if args.rule == "organism":
            group_of = {r["protein_id"]: organism_key(r) for r in rows}
            named_val = _match_organisms(rows, _names(args.ood_val_organisms), "--ood_val_organisms")
            named_test = _match_organisms(rows, _names(args.ood_test_organisms), "--ood_test_organisms")
            if named_val & named_test:
                raise SplitError(f"organism(s) {sorted(named_val & named_test)} named for both ood_val and ood_test")
        elif args.rule == "family":
            if args.clusters:
                clusters = read_clusters(Path(args.clusters))
            elif args.mmseqs:
                clusters = run_mmseqs(rows, args.min_seq_id, args.coverage)
            else:
                raise SplitError("--rule family needs --clusters TSV or --mmseqs")
            group_of = {r["protein_id"]: clusters.get(r["protein_id"], f"(singleton) {r['protein_id']}") for r in rows}
            notes["unclustered_proteins"] = sum(r["protein_id"] not in clusters for r in rows)
            notes["clusters"] = len(set(group_of.values()))
            named_val = named_test = set()
        if args.rule in ("organism", "family"):
            sizes = Counter(group_of.values())
            ood_test = named_test or pick_groups(sizes, round(args.ood_test_fraction * n), rng, named_val)
            ood_val = named_val or pick_groups(sizes, round(args.ood_val_fraction * n), rng, ood_test)
        split_of = assign(rows, group_of, ood_val, ood_test, args.id_val_fraction, args.id_test_fraction, rng)
    by_split = {s: [] for s in SPLITS}
    for r in rows:
        by_split[split_of[r["protein_id"]]].append({k: v for k, v in r.items() if k != "_source"})
    if not by_split["train"]:
        raise SplitError(f"{args.data}: the split leaves no training protein ({n} valid rows)")
    disjoint = check_disjoint(by_split, group_of)
    ensure_dir(out_dir)
    for split, split_rows in by_split.items():
        write_text_atomic(out_dir / f"{split}.jsonl",
                          "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in split_rows))
    seed_text = seed if isinstance(seed, int) else ",".join(map(str, seed))
    write_text_atomic(out_dir / "assignments.tsv",
                      "protein_id\tsplit\trule\tseed\tgroup\n" + "".join(
                          f"{r['protein_id']}\t{s}\t{rule}\t{seed_text}\t{group_of.get(r['protein_id'], '')}\n"
                          for s in SPLITS for r in by_split[s]))
    report = {"schema": "biopost.split_go/v1", "data": str(args.data), "rule": rule, "seed": seed,
              "options": {k: v for k, v in vars(args).items() if k not in ("out",)},
              "counts": split_counts(by_split, group_of), "disjoint": disjoint,
              "ood_groups": {"ood_val": sorted({group_of[r["protein_id"]] for r in by_split["ood_val"]}),
                             "ood_test": sorted({group_of[r["protein_id"]] for r in by_split["ood_test"]})},
              "validation": {k: v.to_dict() for k, v in reports.items()}, "notes": notes}
    write_json_atomic(out_dir / "split_report.json", report)
    return report


class _Src:
    """A Source stand-in for rows that already carry `_source`."""
    def __init__(self, row):
        self._where = row.get("_source", "?")

    def where(self, field=None):
        return f"{self._where}: field {field!r}" if field else self._where


def _names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser(prog: str = "biopost data split-go") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--data", required=True, help="rows: jsonl / json / parquet / csv file, directory, HF dataset")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--rule", choices=RULES, default=None, help="the ID/OOD rule (or --assignments)")
    ap.add_argument("--assignments", default=None, help="apply a protein_id -> split TSV instead of a rule")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--id_val_fraction", type=float, default=0.1)
    ap.add_argument("--id_test_fraction", type=float, default=0.1)
    ap.add_argument("--ood_val_fraction", type=float, default=0.1)
    ap.add_argument("--ood_test_fraction", type=float, default=0.1)
    ap.add_argument("--ood_val_organisms", default=None, help="organism rule: comma-separated names or taxon ids")
    ap.add_argument("--ood_test_organisms", default=None, help="organism rule: comma-separated names or taxon ids")
    ap.add_argument("--clusters", default=None, help="family rule: TSV 'cluster protein_id' (mmseqs createtsv)")
    ap.add_argument("--mmseqs", type=_bool, default=False, help="family rule: cluster with mmseqs easy-cluster")
    ap.add_argument("--min_seq_id", type=float, default=0.3, help="mmseqs --min-seq-id")
    ap.add_argument("--coverage", type=float, default=0.8, help="mmseqs -c")
    ap.add_argument("--annotations", default=None, help="time rule: GAF 2.x file (date = column 14)")
    ap.add_argument("--val_date", default=None, help="time rule: last date of the ID annotations")
    ap.add_argument("--test_date", default=None, help="time rule: last date of the ood_val annotations")
    ap.add_argument("--evidence", choices=("all", "exp"), default="all",
                    help="all: gold from go_mf/go_bp/go_cc (time rule: every GAF code); exp: the *_exp columns "
                         "(time rule: experimental GAF codes only)")
    ap.add_argument("--max_length_protein", type=int, default=0, help="centre-crop longer sequences (counted)")
    ap.add_argument("--skip_invalid", type=_bool, default=False, help="skip and count invalid rows")
    ap.add_argument("--obo", default=None, help="GO OBO file (default: the packaged go-basic 2022-07-01)")
    return ap


def main(argv: list[str] | None = None) -> int:
    from biopost.stage import run_stage

    args = build_parser().parse_args(argv)
    if bool(args.rule) == bool(args.assignments):
        build_parser().error("give exactly one of --rule and --assignments")

    def body(a) -> int:
        report = make_split(a)
        for split, c in report["counts"].items():
            print(f"{split}: {c['proteins']} proteins, {c['terms']} terms, {c['groups']} groups")
        v = report["validation"]
        for rep in v.values():
            if rep["skipped"]:
                print(f"skipped: {rep['skipped']}")
        print(f"rule {report['rule']}; wrote {a.out}/{{{','.join(SPLITS)}}}.jsonl, assignments.tsv, split_report.json")
        return 0
    return run_stage(body, args)
