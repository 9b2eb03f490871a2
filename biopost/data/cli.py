"""`biopost data ...`: synthetic data generators and a data validator."""
import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="biopost data", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    synth = sub.add_parser("synth-kegg", help="write synthetic KEGG-like (or variant-effect) splits",
                           description="Synthetic KEGG-like variant reasoning data: real human DNA "
                           "(GenBank BA000025.2) with a disease decided by a motif the variant creates; "
                           "OOD splits come from held-out pathway networks.")
    synth.add_argument("--out", required=True, help="output directory (train/id_val/ood_val/id_test/ood_test.jsonl)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--task", choices=["kegg", "vep"], default="kegg")
    synth.add_argument("--n_diseases", type=int, default=6)
    synth.add_argument("--seq_len", type=int, default=300, help="bases per sequence (a multiple of 6)")
    synth.add_argument("--compress", action="store_true", help="write .jsonl.gz files")
    synth.add_argument("--sizes", default=None,
                       help='JSON split sizes, e.g. \'{"train": 600, "id_val": 100, "ood_val": 100, '
                            '"id_test": 150, "ood_test": 150}\'')
    check = sub.add_parser("validate", help="validate a dataset against a task schema and print counts")
    check.add_argument("--task", default="kegg")
    check.add_argument("--data_path", required=True)
    check.add_argument("--splits", default="train,id_test,ood_test")
    check.add_argument("--skip_invalid", action="store_true")
    args = parser.parse_args(argv)

    if args.cmd == "synth-kegg":
        from biopost.data.synth_kegg import SynthConfig, generate, write
        cfg = SynthConfig(seed=args.seed, task=args.task, n_diseases=args.n_diseases, seq_len=args.seq_len)
        if args.sizes:
            cfg.sizes = {k: int(v) for k, v in json.loads(args.sizes).items()}
        try:
            data = generate(cfg)
        except ValueError as e:
            parser.error(str(e))
        out = write(args.out, data, cfg, compress=args.compress)
        print(f"wrote {', '.join(f'{k}={len(v)}' for k, v in data.items())} to {out}")
        return 0
    if args.cmd == "validate":
        from biopost.data.examples import load_task_data
        from biopost.data.io import DataError
        from biopost.tasks import get_task
        _import_modalities()
        try:
            load_task_data(get_task(args.task), args.data_path, tuple(args.splits.split(",")),
                           skip_invalid=args.skip_invalid, log=print)
        except (DataError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    return 2


def _import_modalities():
    """The validator serves every modality: import whichever modality packages are installed."""
    import importlib
    for name in ("bioreason", "bioreason_pro"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
