"""`biopost eval go`: CAFA-style GO metrics of prediction files, equal to cafaeval 1.3.0.

Reads cafaeval's formats (truth `protein<TAB>term`, predictions `protein<TAB>term<TAB>score`
as one file or a folder of methods, IA `term<TAB>ia`), writes `DIR/go_metrics.json` and prints
a table. Seconds on the full GO where cafaeval takes minutes and a gigabyte: see
bench/RESULTS.md ("GO metrics"); the rules are in docs/go_metrics.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from biopost.errors import UserError

SCHEMA = "biopost.go_metrics/v1"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="biopost eval go",
        description="Fmax, IA-weighted Fmax, Smin and coverage per GO namespace of one or more "
                    "prediction sets, computed as cafaeval 1.3.0 computes them (threshold grid "
                    "np.arange(step, 1, step), score >= threshold, propagation over is_a and "
                    "part_of, CAFA normalization). Writes DIR/go_metrics.json and prints a table.",
        epilog="Example: biopost eval go --obo go-basic.obo.gz --truth truth.tsv --pred preds/ "
               "--ia IA.tsv --out results/go",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--obo", default=None,
                   help="Gene Ontology OBO file, plain or gzipped (default: the packaged go-basic, "
                        "release 2022-07-01)")
    p.add_argument("--truth", required=True, help="ground truth: 'protein<TAB>term' lines")
    p.add_argument("--pred", required=True,
                   help="predictions: 'protein<TAB>term<TAB>score' lines; a file, or a folder whose "
                        "files (recursively) are one method each")
    p.add_argument("--out", required=True, help="output directory (go_metrics.json is written there)")
    p.add_argument("--ia", default=None,
                   help="information accretion file 'term<TAB>ia'; without it no weighted metrics")
    p.add_argument("--norm", choices=("cafa", "pred", "gt"), default="cafa",
                   help="cafa: precision over proteins with a prediction at the threshold, the rest "
                        "over proteins with truth; pred / gt: everything over one of the two")
    p.add_argument("--th_step", type=float, default=0.01, help="threshold step (thresholds step..1)")
    p.add_argument("--no_orphans", action="store_true",
                   help="leave terms without a parent (the roots) out of the unweighted metrics")
    return p


def _fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def table(results: dict) -> str:
    """The stdout table: one row per method and namespace."""
    head = ["method", "aspect", "n_truth", "Fmax", "P", "R", "tau", "cov", "wFmax", "w_tau", "w_cov", "Smin", "s_tau"]
    rows = [head]
    for name, m in results["methods"].items():
        for ns, r in m["namespaces"].items():
            if not r.get("evaluated"):
                rows.append([name, r["aspect"], str(r.get("n_truth", 0)), f"({r['reason']})"] + [""] * (len(head) - 4))
                continue
            fm, w, s = r["fmax"], r["weighted_fmax"], r["smin"]
            rows.append([name, r["aspect"], str(r["n_truth"]), _fmt(fm["fmax"]), _fmt(fm["precision"]),
                         _fmt(fm["recall"]), _fmt(fm["threshold"], ".2f"), _fmt(fm["coverage"]),
                         _fmt(w and w["fmax"]), _fmt(w and w["threshold"], ".2f"), _fmt(w and w["coverage"]),
                         _fmt(s["smin"]), _fmt(s["threshold"], ".2f")])
        c5 = m.get("cafa5", {})
        if c5.get("value") is not None:
            rows.append([name, "CAFA5", "", "", "", "", "", "", _fmt(c5["value"])] + [""] * 4)
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows)


def run(args) -> dict:
    from bioreason_pro.cafa_files import prediction_files, read_ia, read_predictions, read_truth
    from bioreason_pro.go_metrics import cafa5_score, evaluate_method
    from bioreason_pro.ontology import load_ontology

    if not 0 < args.th_step < 1:
        raise UserError(f"--th_step must be in (0, 1), got {args.th_step}")
    t0 = time.perf_counter()
    onto = load_ontology(args.obo)
    t_onto = time.perf_counter() - t0
    truth = read_truth(args.truth, onto)
    ia, ia_counts = (None, None) if args.ia is None else read_ia(args.ia, onto)
    methods = {}
    for name, path in prediction_files(args.pred):
        pred = read_predictions(path, onto, truth, name=name)
        res = evaluate_method(onto, truth, pred, ia, norm=args.norm, th_step=args.th_step,
                              orphans=not args.no_orphans)
        methods[name] = {"file": str(path), "counts": pred.counts, "namespaces": res,
                         "cafa5": cafa5_score(res)}
    computed = ("Fmax (precision, recall, threshold, coverage), micro-averaged Fmax and Smin "
                "(from unweighted term counts, as cafaeval reports it)"
                + ("; IA-weighted Fmax, micro Fmax and Smin; CAFA5 summary (mean weighted Fmax over MF, BP, CC)"
                   if ia is not None else "; no IA file, so no weighted metrics")
                + f"; thresholds numpy.arange({args.th_step}, 1, {args.th_step}), score >= threshold, "
                  f"norm={args.norm}, propagation over is_a and part_of, cafaeval 1.3.0 conventions")
    return {"schema": SCHEMA, "computed": computed,
            "obo": onto.source, "obo_data_version": onto.data_version,
            "truth": str(args.truth), "pred": str(args.pred), "ia": None if args.ia is None else str(args.ia),
            "norm": args.norm, "th_step": args.th_step, "orphans": not args.no_orphans,
            "truth_counts": truth.counts, "ia_counts": ia_counts,
            "truth_proteins": {ns: len(t.proteins) for ns, t in truth.namespaces.items()},
            "methods": methods,
            "timing_s": {"ontology": round(t_onto, 3), "total": round(time.perf_counter() - t0, 3)}}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from biopost.files import write_json_atomic
    try:
        results = run(args)
        out = Path(args.out) / "go_metrics.json"
        write_json_atomic(out, results)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(table(results))
    print(f"wrote {out} ({results['timing_s']['total']:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
