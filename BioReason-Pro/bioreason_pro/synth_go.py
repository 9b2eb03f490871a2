"""A synthetic GO benchmark in the real protein row schema, with a documented ID/OOD shift.

`biopost data synth-go --out DIR [--seed 0]` writes `train / id_val / ood_val / id_test /
ood_test.jsonl` and `synth_go.json` (the settings and per-split counts). Mechanism (README in
BioReason-Pro/data/synth_go/):

- Every protein belongs to one of four families. The family decides one molecular-function
  term (real GO 2022-07-01 ids) and is written into the sequence as a *strong* signal: a
  family motif of 8 residues, rich in a residue that the background never uses (W, Y, C or H),
  repeated three times at random positions.
- Every protein has one cellular-component term, written into the sequence as a *weak*
  signal: one 4-residue localization motif (from background letters) at a random position.
- The shortcut: in the ID organisms (train, id_val, id_test) the organism decides the CC term
  (two organisms per compartment), so the organism name in the prompt predicts CC perfectly.
  In the OOD organisms (held out: ood_val and ood_test use disjoint organism sets) the CC term
  is drawn uniformly, independent of the organism. The family motif (MF) works everywhere; the
  CC motif works everywhere too but is a single 4-mer at a random offset, which a tiny model
  does not learn within its short training while the organism shortcut is there to take.

So a trained model is right on MF everywhere and on CC in ID proteins only: OOD F1 falls below
ID, and stays above the most-frequent-terms baseline (which knows neither).

`--no_organism_shortcut` (`SynthGoConfig(organism_shortcut=False)`): the control without the text
shortcut, for asking whether a model's score comes from the sequence. Same splits, sizes,
organisms, families, GO terms and row schema; what changes:

- the organism is drawn uniformly from its split's organisms, independent of the family and the
  compartment, in every split: the prompt's text carries no information about any term;
- CC is written as a *strong* signal like MF's, so that the sequence decides every term a model
  can get right: a compartment motif of 8 residues rich in a residue that neither the background
  nor any family motif uses (Q, N or P; `STRONG_CC_MOTIFS`), repeated `STRONG_CC_COPIES` times.
  The background drops Q, N and P (`NO_SHORTCUT_BACKGROUND`). The motifs are laid out in a random
  order with random gaps (it cannot run out of room, as random placement of five 8-mers in 56
  residues can).

With sequences shuffled among the proteins (same text), nothing in a prompt predicts its terms,
so a model that reads the sequence falls to the most-frequent-terms baseline on every aspect
(tests/test_protein_eval.py). The default (`organism_shortcut=True`) is unchanged: its rows and
synth_go.json are byte-identical to those written before the option existed.
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

SPLITS = ("train", "id_val", "ood_val", "id_test", "ood_test")
BACKGROUND = "ADEFGIKLMNPQRSTV"   # 16 residues; W, Y, C, H are reserved for the family motifs

# family -> (MF term, name, motif): each motif is rich in one residue the background never uses
FAMILIES = {
    "hydrolase": ("GO:0016787", "hydrolase activity", "GWSWGWSW"),
    "transporter": ("GO:0005215", "transporter activity", "LYVYAYLY"),
    "transcription factor": ("GO:0003700", "DNA-binding transcription factor activity", "CKECGKCF"),
    "kinase": ("GO:0004672", "protein kinase activity", "HRDHKHEH"),
}
# compartment -> (CC term, name, localization motif of background letters)
COMPARTMENTS = {
    "endoplasmic reticulum": ("GO:0005783", "endoplasmic reticulum", "KDEL"),
    "mitochondrion": ("GO:0005739", "mitochondrion", "RRLS"),
    "extracellular region": ("GO:0005576", "extracellular region", "SGPA"),
}
# ID organisms: two per compartment (the shortcut); OOD organisms: unseen, CC independent of them
ID_ORGANISMS = {
    "Homo sapiens": "endoplasmic reticulum", "Mus musculus": "endoplasmic reticulum",
    "Saccharomyces cerevisiae": "mitochondrion", "Arabidopsis thaliana": "mitochondrion",
    "Escherichia coli": "extracellular region", "Drosophila melanogaster": "extracellular region",
}
OOD_VAL_ORGANISMS = ("Danio rerio", "Caenorhabditis elegans", "Bacillus subtilis")
OOD_TEST_ORGANISMS = ("Xenopus laevis", "Oryza sativa", "Takifugu rubripes")

# organism_shortcut=False: CC decided by a strong compartment motif. Its rare residues (Q, N, P)
# are in no family motif, and the background leaves them out, so each compartment has a
# composition signal of its own, as each family does.
STRONG_CC_MOTIFS = {"endoplasmic reticulum": "QEQDQLQE", "mitochondrion": "NLNSNRNA",
                    "extracellular region": "PSPGPAPG"}
STRONG_CC_COPIES = 2
NO_SHORTCUT_BACKGROUND = "".join(c for c in BACKGROUND if c not in "QNP")   # 13 residues


@dataclass
class SynthGoConfig:
    seed: int = 0
    n_train: int = 480
    n_id_val: int = 40
    n_ood_val: int = 40
    n_id_test: int = 90
    n_ood_test: int = 90
    min_length: int = 56
    max_length: int = 72
    motif_copies: int = 3
    organism_shortcut: bool = True   # False: the control without the text shortcut (module docstring)
    counts: dict = field(default_factory=dict)


def _place(seq: list[str], motif: str, rng: random.Random, taken: list[tuple[int, int]]) -> None:
    """Overwrite `motif` at a random position not overlapping earlier motifs (position 0 keeps M)."""
    for _ in range(1000):
        start = rng.randrange(1, len(seq) - len(motif) + 1)
        if all(start + len(motif) <= a or start >= b for a, b in taken):
            seq[start:start + len(motif)] = motif
            taken.append((start, start + len(motif)))
            return
    raise RuntimeError("no room for the motif: raise min_length")


def make_protein(i: int, family: str, compartment: str, organism: str, cfg: SynthGoConfig,
                 rng: random.Random) -> dict:
    length = rng.randint(cfg.min_length, cfg.max_length)
    seq = ["M"] + [rng.choice(BACKGROUND) for _ in range(length - 1)]
    taken: list[tuple[int, int]] = []
    mf, mf_name, motif = FAMILIES[family]
    for _ in range(cfg.motif_copies):
        _place(seq, motif, rng, taken)
    cc, cc_name, loc = COMPARTMENTS[compartment]
    _place(seq, loc, rng, taken)
    return {"protein_id": f"SYNGO{i:05d}", "sequence": "".join(seq), "organism": organism,
            "go_mf": [mf], "go_bp": [], "go_cc": [cc],
            "reasoning": f"Repeated {family} motifs.",
            "family": family, "compartment": compartment}


def make_protein_no_shortcut(i: int, family: str, compartment: str, organism: str, cfg: SynthGoConfig,
                             rng: random.Random) -> dict:
    """A protein of the organism_shortcut=False control: family and compartment motifs, both
    strong, in a random order with random gaps of background residues between them."""
    length = rng.randint(cfg.min_length, cfg.max_length)
    motifs = [FAMILIES[family][2]] * cfg.motif_copies + [STRONG_CC_MOTIFS[compartment]] * STRONG_CC_COPIES
    free = length - 1 - sum(len(m) for m in motifs)
    if free < 0:
        from biopost.errors import UserError
        raise UserError(f"synth-go --no_organism_shortcut: a protein of {length} residues has no room for "
                        f"M + {len(motifs)} motifs ({length - free} residues): raise min_length")
    rng.shuffle(motifs)
    cuts = sorted(rng.randint(0, free) for _ in motifs)          # k motifs -> k + 1 gaps summing to `free`
    gaps = [b - a for a, b in zip([0] + cuts, cuts + [free])]
    seq = ["M"]
    for gap, motif in zip(gaps, motifs + [""]):
        seq += [rng.choice(NO_SHORTCUT_BACKGROUND) for _ in range(gap)] + list(motif)
    mf, _, _ = FAMILIES[family]
    cc, _, _ = COMPARTMENTS[compartment]
    return {"protein_id": f"SYNGO{i:05d}", "sequence": "".join(seq), "organism": organism,
            "go_mf": [mf], "go_bp": [], "go_cc": [cc],
            "reasoning": f"Repeated {family} motifs.",
            "family": family, "compartment": compartment}


def generate(cfg: SynthGoConfig) -> dict[str, list[dict]]:
    if not cfg.organism_shortcut:
        return _generate_no_shortcut(cfg)
    rng = random.Random(cfg.seed)
    families = list(FAMILIES)
    compartments = list(COMPARTMENTS)
    id_orgs = list(ID_ORGANISMS)
    out: dict[str, list[dict]] = {}
    i = 0
    for split in SPLITS:
        n = getattr(cfg, f"n_{split}")
        rows = []
        for _ in range(n):
            family = families[rng.randrange(len(families))]
            if split.startswith("ood"):
                organism = rng.choice(OOD_VAL_ORGANISMS if split == "ood_val" else OOD_TEST_ORGANISMS)
                compartment = rng.choice(compartments)          # no shortcut: independent of organism
            else:
                organism = rng.choice(id_orgs)
                compartment = ID_ORGANISMS[organism]            # the shortcut
            rows.append(dict(make_protein(i, family, compartment, organism, cfg, rng), split=split))
            i += 1
        out[split] = rows
    return out


def _generate_no_shortcut(cfg: SynthGoConfig) -> dict[str, list[dict]]:
    """organism_shortcut=False: family, compartment and organism drawn independently in every
    split (a code path of its own, so the default's random stream, and its rows, stay as they were).
    Not balanced on purpose: with equal term counts the most-frequent-terms baseline would be a
    tie broken by the smallest GO id, here the weakest constant answer (transcription factor +
    extracellular region), not a typical one."""
    rng = random.Random(cfg.seed)
    families, compartments = list(FAMILIES), list(COMPARTMENTS)
    organisms = {"ood_val": list(OOD_VAL_ORGANISMS), "ood_test": list(OOD_TEST_ORGANISMS)}
    out: dict[str, list[dict]] = {}
    i = 0
    for split in SPLITS:
        orgs = organisms.get(split, list(ID_ORGANISMS))
        rows = []
        for _ in range(getattr(cfg, f"n_{split}")):
            family, compartment, organism = rng.choice(families), rng.choice(compartments), rng.choice(orgs)
            rows.append(dict(make_protein_no_shortcut(i, family, compartment, organism, cfg, rng), split=split))
            i += 1
        out[split] = rows
    return out


def write(out_dir: Path, splits: dict[str, list[dict]], cfg: SynthGoConfig) -> dict:
    from biopost.files import ensure_dir, write_json_atomic, write_text_atomic

    out_dir = Path(out_dir)
    ensure_dir(out_dir)
    counts = {}
    for split, rows in splits.items():
        write_text_atomic(out_dir / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        counts[split] = {"proteins": len(rows),
                         "terms": len({t for r in rows for c in ("go_mf", "go_bp", "go_cc") for t in r[c]}),
                         "organisms": len({r["organism"] for r in rows})}
    cfg.counts = counts
    config = asdict(cfg)
    if cfg.organism_shortcut:
        # the default's synth_go.json stays byte-identical to the one written before the option existed
        del config["organism_shortcut"]
    meta = {"generator": "bioreason_pro.synth_go", "config": config,
            "families": FAMILIES, "compartments": COMPARTMENTS, "id_organisms": ID_ORGANISMS,
            "ood_val_organisms": OOD_VAL_ORGANISMS, "ood_test_organisms": OOD_TEST_ORGANISMS,
            "split_rule": "organism: ood_val and ood_test organisms are held out of train and disjoint"}
    if not cfg.organism_shortcut:
        meta.update(id_organisms=list(ID_ORGANISMS), strong_cc_motifs=STRONG_CC_MOTIFS,
                    strong_cc_copies=STRONG_CC_COPIES, background=NO_SHORTCUT_BACKGROUND,
                    mechanism="no organism shortcut: organism independent of every term in every split; "
                              "MF decided by the family motif, CC by the strong compartment motif")
    write_json_atomic(out_dir / "synth_go.json", meta)
    return counts


def most_frequent_terms(rows: list[dict]) -> list[str]:
    """The most-frequent-terms baseline: the most frequent gold term of each aspect in `rows`
    (ties: the smallest id), predicted for every protein."""
    from collections import Counter
    answer = []
    for col in ("go_mf", "go_bp", "go_cc"):
        c = Counter(t for r in rows for t in r[col])
        if c:
            answer.append(min(c, key=lambda t: (-c[t], t)))
    return answer


def main(argv: list[str] | None = None) -> int:
    from biopost.stage import run_stage

    ap = argparse.ArgumentParser(prog="biopost data synth-go", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    for name in ("n_train", "n_id_val", "n_ood_val", "n_id_test", "n_ood_test"):
        ap.add_argument(f"--{name}", type=int, default=getattr(SynthGoConfig, name))
    ap.add_argument("--no_organism_shortcut", action="store_true",
                    help="the control without the text shortcut: the organism is independent of every "
                         "term in every split and CC is decided by a strong compartment motif, so the "
                         "sequence decides every term (default: the ID organisms decide CC)")
    args = ap.parse_args(argv)

    def body(_) -> int:
        cfg = SynthGoConfig(seed=args.seed, organism_shortcut=not args.no_organism_shortcut,
                            **{k: getattr(args, k) for k in
                               ("n_train", "n_id_val", "n_ood_val", "n_id_test", "n_ood_test")})
        counts = write(Path(args.out), generate(cfg), cfg)
        for split, c in counts.items():
            print(f"{split}: {c['proteins']} proteins, {c['terms']} terms, {c['organisms']} organisms")
        return 0
    return run_stage(body, args)
