"""`biopost model merge`: a checkpoint -> a plain HF model directory (plus the projectors)."""
import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="biopost model", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    merge = sub.add_parser("merge", help="merge a LoRA checkpoint into a plain HF model directory")
    merge.add_argument("--checkpoint", required=True, help="a checkpoint directory, e.g. RUN/checkpoints/last")
    merge.add_argument("--out", required=True, help="output directory")
    merge.add_argument("--trust_remote_code", action="store_true")
    args = parser.parse_args(argv)
    from biopost.model.bio_model import BioReasoningModel
    try:
        model = BioReasoningModel.load(args.checkpoint, trust_remote_code=args.trust_remote_code)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = model.merge(args.out)
    print(f"merged {args.checkpoint} -> {out}")
    return 0
