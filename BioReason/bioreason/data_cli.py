"""`biopost data synth-kegg`: the DNA modality's synthetic data generator, as a command."""
from __future__ import annotations

import argparse
import json


def synth_kegg_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="biopost data synth-kegg",
        description="Synthetic KEGG-like variant reasoning data: real human DNA (GenBank BA000025.2) with "
                    "a disease decided by a motif the variant creates; OOD splits come from held-out "
                    "pathway networks. --version 1 (default): one motif per disease everywhere, so OOD "
                    "equals ID. --version 2: motif families whose held-out members appear only in OOD "
                    "networks, and a network-name text shortcut that holds in training networks and "
                    "breaks in held-out ones (bioreason/synth_kegg_v2.py; data/kegg_synth_v2).")
    parser.add_argument("--out", required=True, help="output directory (train/id_val/ood_val/id_test/ood_test.jsonl)")
    parser.add_argument("--version", type=int, choices=[1, 2], default=1,
                        help="generator version (1: v1 rows, byte-identical to earlier releases; 2: ID/OOD shift)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", choices=["kegg", "vep"], default="kegg", help="vep: version 1 only")
    parser.add_argument("--n_diseases", type=int, default=6)
    parser.add_argument("--seq_len", type=int, default=300, help="bases per sequence (a multiple of 6)")
    parser.add_argument("--compress", action="store_true", help="write .jsonl.gz files")
    parser.add_argument("--sizes", default=None,
                        help='JSON split sizes, e.g. \'{"train": 600, "id_val": 100, "ood_val": 100, '
                             '"id_test": 150, "ood_test": 150}\' (version 2 default: 1000/200/200/500/500)')
    v2 = parser.add_argument_group("version 2")
    v2.add_argument("--motifs_per_disease", type=int, default=4, help="size of each disease's motif family")
    v2.add_argument("--id_motifs", type=int, default=2, help="family members used in training networks")
    v2.add_argument("--ood_shared_fraction", type=float, default=0.5,
                    help="fraction of OOD rows whose motif is a training member (the rest: held-out members)")
    v2.add_argument("--shortcut_agreement", type=float, default=0.8,
                    help="fraction of training-network rows whose label is the disease the network's name carries")
    args = parser.parse_args(argv)
    sizes = None
    if args.sizes:
        try:
            sizes = {str(k): int(v) for k, v in json.loads(args.sizes).items()}
        except (ValueError, TypeError, AttributeError) as e:
            parser.error(f"--sizes: expected a JSON object of split sizes, got {args.sizes!r} ({e})")

    if args.version == 2:
        if args.task != "kegg":
            parser.error("--version 2 writes the kegg task only (variant-effect rows: --version 1)")
        from bioreason.synth_kegg_v2 import SynthConfigV2, generate as generate_v2, write as write_v2
        cfg2 = SynthConfigV2(seed=args.seed, n_diseases=args.n_diseases, seq_len=args.seq_len,
                             motifs_per_disease=args.motifs_per_disease, id_motifs=args.id_motifs,
                             ood_shared_fraction=args.ood_shared_fraction,
                             shortcut_agreement=args.shortcut_agreement)
        if sizes is not None:
            cfg2.sizes = sizes
        try:
            data, facts = generate_v2(cfg2)
        except ValueError as e:
            parser.error(str(e))
        out = write_v2(args.out, data, facts, cfg2, compress=args.compress)
        print(f"wrote {', '.join(f'{k}={len(v)}' for k, v in data.items())} (version 2) to {out}")
        return 0

    from bioreason.synth_kegg import SynthConfig, generate, write
    cfg = SynthConfig(seed=args.seed, task=args.task, n_diseases=args.n_diseases, seq_len=args.seq_len)
    if sizes is not None:
        cfg.sizes = sizes
    try:
        data = generate(cfg)
    except ValueError as e:
        parser.error(str(e))
    out = write(args.out, data, cfg, compress=args.compress)
    print(f"wrote {', '.join(f'{k}={len(v)}' for k, v in data.items())} to {out}")
    return 0
