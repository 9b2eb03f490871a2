"""`biopost data swissprot-go`: the real Swiss-Prot mini GO benchmark, built from committed files.

    biopost data swissprot-go --out DIR [--evidence exp|all]

Inputs (BioReason-Pro/bioreason_pro/resources/swissprot/, see its README):
- `swissprot_go.jsonl.gz`: the fixture of 130 real Swiss-Prot entries, committed unmodified (most
  entries carry UniProt's old CC BY-ND notice, so the project ships no derived file);
- `assignments.tsv`: protein_id -> split (rule `organism`, seed 0) of the 40 proteins with an
  experimental GO term.

The split command (`bioreason_pro.split_go.make_split`) validates the rows and writes the five
split files: gold = the experimental columns `go_mf_exp / go_bp_exp / go_cc_exp` (EXP IDA IPI IMP
IGI IEP TAS IC), alt ids mapped to their primary term and obsolete ids dropped, both counted; the
90 proteins without an experimental term are skipped and counted. `--evidence all` takes the gold
from `go_mf / go_bp / go_cc` (every evidence code, IEA included) for the same 40 proteins (the
other 90 are not in the assignment file and are counted as such).

A plumbing benchmark on real data (40 proteins), not a measurement.
"""
from __future__ import annotations

import argparse
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent / "resources" / "swissprot"
FIXTURE = RESOURCES / "swissprot_go.jsonl.gz"
ASSIGNMENTS = RESOURCES / "assignments.tsv"


def build(out_dir, evidence: str = "exp", obo: str | None = None) -> dict:
    """Write the benchmark's split files into `out_dir`; returns the split report."""
    from bioreason_pro.split_go import build_parser, make_split

    args = build_parser().parse_args(["--data", str(FIXTURE), "--out", str(out_dir), "--assignments", str(ASSIGNMENTS),
                                      "--evidence", evidence, "--skip_invalid", "true"]
                                     + (["--obo", str(obo)] if obo else []))
    return make_split(args)


def main(argv: list[str] | None = None) -> int:
    from biopost.stage import run_stage

    ap = argparse.ArgumentParser(prog="biopost data swissprot-go", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--evidence", choices=("exp", "all"), default="exp",
                    help="exp: experimental GO terms only (default); all: every evidence code")
    args = ap.parse_args(argv)

    def body(a) -> int:
        report = build(a.out, a.evidence)
        for split, c in report["counts"].items():
            print(f"{split}: {c['proteins']} proteins, {c['terms']} terms, {c['organisms']} organisms")
        val = next(iter(report["validation"].values()))
        print(f"validation: {val['n_valid']}/{val['n_rows']} rows valid, skipped {val['skipped']}, "
              f"{val['alt_mapped']} alt ids mapped, {val['obsolete_dropped']} obsolete ids dropped; "
              f"not in the assignment file: {report['notes'].get('not_in_assignments', 0)}")
        return 0
    return run_stage(body, args)
