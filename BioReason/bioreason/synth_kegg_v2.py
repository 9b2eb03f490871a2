"""Synthetic KEGG benchmark v2: the same schema and DNA as v1, with an ID/OOD shift that shows.

Why a second generator: in v1 the disease is decided by one DNA motif per disease that appears in
every network, so a model that reads the motif is as good OOD as ID (measured: 0.993 ID, 1.000
OOD) and the study cannot see CPT, SFT or RL move the gap. v2 keeps v1's rows (a 300 bp window of a
real gene locus, GenBank BA000025.2, around a single-nucleotide variant that creates a motif on the
6-mer grid; reference and variant differ in that one base) and adds two documented mechanisms:

1. Motif families (the causal signal, partly transferable). Each disease has a family of
   `motifs_per_disease` 6-mers (pairwise Hamming distance >= 3 over all families). Training
   networks -- and hence train, id_val, id_test -- only ever use the first `id_motifs` members.
   In held-out networks a fraction `ood_shared_fraction` of rows uses those same members; the rest
   use the family's other members, which no training row contains. A model that learned the
   motifs transfers on the shared part and is at chance on the novel part: OOD accuracy is bounded
   by about ood_shared_fraction + (1 - ood_shared_fraction) / n_diseases (0.58 at the defaults),
   while ID can reach 1.0. A pretrained DNA encoder that groups a family's members could do
   better; the tiny random encoder cannot.
2. A text shortcut (agrees in training networks, breaks in held-out ones). Every network's name
   carries a disease, as real KEGG pathway names do ("... Parkinson disease pathway ..."). In
   training networks the row's label is that disease in a fraction `shortcut_agreement` of rows
   (the motif planted is always the label's), so copying the name from the prompt scores about
   0.8 ID; in held-out networks the label is drawn independently of the name, so the shortcut
   scores chance OOD. The DNA motif is the only signal that works everywhere.

The disease a row's variant creates is always its label: nothing but the motif decides it. The
OOD splits use networks held out of training (ood_val and ood_test from disjoint networks), whose
genes, DNA backgrounds and question text the model never saw. `synth_meta.json` records, per split,
which rows use a novel motif and whether the network's named disease agrees with the label.

KEGG task only (answer: a disease). Written by `biopost data synth-kegg --version 2`; the committed
copy is data/kegg_synth_v2 (its README has the measured figures).
"""
from __future__ import annotations

import gzip
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bioreason.synth_kegg import (BASES, DISEASES, MOTIF_LEN, RELATIONS, SPLITS, Network, _question,
                                  _reasoning, _variant_pair, read_gene_windows)

GENERATOR = "bioreason.synth_kegg_v2"
VERSION = 2


@dataclass
class SynthConfigV2:
    seed: int = 0
    n_diseases: int = 6
    seq_len: int = 300                 # multiple of 6: the motif sits on the 6-mer grid
    n_networks: int = 16
    genes_per_network: int = 6
    n_ood_val_networks: int = 3
    n_ood_test_networks: int = 3
    motifs_per_disease: int = 4        # the family of 6-mers that signal one disease
    id_motifs: int = 2                 # members used in training networks (the rest: OOD only)
    ood_shared_fraction: float = 0.5   # OOD rows whose motif is one of the id_motifs members
    shortcut_agreement: float = 0.8    # training-network rows whose label is the network's named disease
    # test splits of 500: a ci95 of about +-4 points (at 150 it is about +-8)
    sizes: dict = field(default_factory=lambda: {"train": 1000, "id_val": 200, "ood_val": 200,
                                                 "id_test": 500, "ood_test": 500})


def motif_families(n_diseases: int, per_disease: int) -> dict[str, list[str]]:
    """disease -> its family of 6-mers; fixed (independent of the data seed), pairwise Hamming
    distance >= 3 over all families, so one base change never turns one motif into another."""
    rng = random.Random(20261202)
    motifs: list[str] = []
    while len(motifs) < len(DISEASES) * per_disease:
        m = "".join(rng.choice(BASES) for _ in range(MOTIF_LEN))
        if len(set(m)) >= 3 and all(sum(a != b for a, b in zip(m, o)) >= 3 for o in motifs):
            motifs.append(m)
    # drawn for all 12 diseases, so a family does not change with n_diseases
    return {d: motifs[i * per_disease:(i + 1) * per_disease] for i, d in enumerate(DISEASES[:n_diseases])}


def _validate(cfg: SynthConfigV2) -> None:
    if cfg.seq_len % MOTIF_LEN or cfg.seq_len < 120:
        raise ValueError(f"seq_len must be a multiple of {MOTIF_LEN} and >= 120, got {cfg.seq_len}")
    if not 2 <= cfg.n_diseases <= len(DISEASES):
        raise ValueError(f"n_diseases must be between 2 and {len(DISEASES)}, got {cfg.n_diseases}")
    if not 1 <= cfg.id_motifs < cfg.motifs_per_disease <= 8:
        raise ValueError(f"need 1 <= id_motifs < motifs_per_disease <= 8 (the OOD-only members are the rest), "
                         f"got id_motifs {cfg.id_motifs}, motifs_per_disease {cfg.motifs_per_disease}")
    for name in ("ood_shared_fraction", "shortcut_agreement"):
        value = getattr(cfg, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a fraction between 0 and 1, got {value}")
    unknown = set(cfg.sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) in sizes: {sorted(unknown)} (splits: {', '.join(SPLITS)})")
    n_ood = cfg.n_ood_val_networks + cfg.n_ood_test_networks
    if n_ood >= cfg.n_networks:
        raise ValueError(f"{n_ood} held-out networks of {cfg.n_networks} leave none for training")


def _build_networks(cfg: SynthConfigV2, rng: random.Random, genes: list[str],
                    diseases: list[str]) -> list[tuple[Network, str]]:
    """(network, the disease its name carries). Named diseases cycle through the label set, so
    that in training every disease is some network's shortcut."""
    need = cfg.n_networks * cfg.genes_per_network
    if need > len(genes):
        raise ValueError(f"{cfg.n_networks} networks x {cfg.genes_per_network} genes need {need} genes; "
                         f"the DNA fixture has {len(genes)}")
    pool = genes[:]
    rng.shuffle(pool)
    n_ood = cfg.n_ood_val_networks + cfg.n_ood_test_networks
    out = []
    for i in range(cfg.n_networks):
        members = pool[i * cfg.genes_per_network:(i + 1) * cfg.genes_per_network]
        chain = [members[0]]
        for g in members[1:]:
            chain += [rng.choice(RELATIONS), g]
        # training networks first in the cycle: with 10 of them and 6 diseases every disease is named
        named = diseases[(i - n_ood) % len(diseases)]
        name = f"N{rng.randrange(10000, 99999):05d} {named} pathway module {i + 1}"
        out.append((Network(name=name, genes=members, definition=" ".join(chain)), named))
    return out


def generate(cfg: SynthConfigV2) -> tuple[dict[str, list[dict]], dict]:
    """(split -> rows, per-split facts for synth_meta.json)."""
    _validate(cfg)
    rng = random.Random(cfg.seed)
    windows = read_gene_windows()
    diseases = DISEASES[:cfg.n_diseases]
    families = motif_families(cfg.n_diseases, cfg.motifs_per_disease)
    all_motifs = {m for fam in motif_families(len(DISEASES), cfg.motifs_per_disease).values() for m in fam}
    networks = _build_networks(cfg, rng, sorted(windows), diseases)
    n_ood = cfg.n_ood_val_networks + cfg.n_ood_test_networks
    split_networks = {"ood_val": networks[:cfg.n_ood_val_networks],
                      "ood_test": networks[cfg.n_ood_val_networks:n_ood]}
    for split in ("train", "id_val", "id_test"):
        split_networks[split] = networks[n_ood:]

    data: dict[str, list[dict]] = {}
    facts: dict[str, dict] = {}
    for split in SPLITS:
        ood = split.startswith("ood")
        rows, n_novel, n_agree = [], 0, 0
        for i in range(cfg.sizes.get(split, 0)):
            net, named = rng.choice(split_networks[split])
            gene = rng.choice(net.genes)
            locus, background = windows[gene]
            if not ood and rng.random() < cfg.shortcut_agreement:
                disease = named
            elif not ood:
                disease = rng.choice([d for d in diseases if d != named])
            else:
                disease = rng.choice(diseases)  # independent of the name: the shortcut breaks
            novel = ood and rng.random() >= cfg.ood_shared_fraction
            members = families[disease][cfg.id_motifs:] if novel else families[disease][:cfg.id_motifs]
            motif = rng.choice(members)
            ref, var, pos, ref_b, alt_b = _variant_pair(background, motif, all_motifs, cfg.seq_len, rng)
            reasoning = _reasoning(net, gene, locus, pos, ref_b, alt_b, disease)
            reasoning["labels"].update(motif=motif, novel_motif=novel, network_disease=named)
            rows.append({
                "id": f"{split}-{i:05d}",
                "question": _question("kegg", net, gene),
                "answer": disease,
                "reference_sequence": ref,
                "variant_sequence": var,
                "reasoning": reasoning,
                "network": net.name,
                "gene": gene,
            })
            n_novel += novel
            n_agree += disease == named
        data[split] = rows
        n = len(rows)
        counts = {d: sum(r["answer"] == d for r in rows) for d in diseases}
        facts[split] = {"n": n, "networks": sorted({net.name for net, _ in split_networks[split]}),
                        "novel_motif_fraction": round(n_novel / n, 4) if n else None,
                        "shortcut_agreement": round(n_agree / n, 4) if n else None,
                        "majority_rate": round(max(counts.values()) / n, 4) if n else None}
    return data, facts


def write(out_dir: str | Path, data: dict[str, list[dict]], facts: dict, cfg: SynthConfigV2,
          compress: bool = False) -> Path:
    """One `<split>.jsonl` (or `.jsonl.gz`, byte-identical for the same seed) per split, plus
    `synth_meta.json` (mechanism, motif families, per-split facts)."""
    from biopost.files import ensure_dir, write_bytes_atomic, write_text_atomic

    out = ensure_dir(Path(out_dir))
    ext = ".jsonl.gz" if compress else ".jsonl"
    for split, rows in data.items():
        payload = "".join(json.dumps(row) + "\n" for row in rows).encode()
        if compress:  # mtime 0 and no file name in the header: same bytes for the same seed
            payload = gzip.compress(payload, compresslevel=9, mtime=0)
        # a stale file of the other form would be read too (the loaders take either)
        other = out / f"{split}{'.jsonl' if compress else '.jsonl.gz'}"
        if other.exists():
            other.unlink()
        write_bytes_atomic(out / f"{split}{ext}", payload)
    families = motif_families(cfg.n_diseases, cfg.motifs_per_disease)
    meta = {"generator": GENERATOR, "version": VERSION, "config": asdict(cfg),
            "diseases": DISEASES[:cfg.n_diseases],
            "motif_families": {d: {"id": fam[:cfg.id_motifs], "ood_only": fam[cfg.id_motifs:]}
                               for d, fam in families.items()},
            "splits": facts,
            "ood_ceiling": round(cfg.ood_shared_fraction + (1 - cfg.ood_shared_fraction) / cfg.n_diseases, 4),
            "dna_source": "GenBank BA000025.2 (human chr6p21.3), see DATA_LICENSES.md"}
    write_text_atomic(out / "synth_meta.json", json.dumps(meta, indent=1) + "\n")
    return out
