"""Synthetic KEGG-like variant reasoning data with real human DNA as background.

Why synthetic: real KEGG variant data cannot be redistributed or downloaded here, but the
pipeline needs data with the real schema whose label is *decided by the DNA*. Each example is
a 300 bp window of a real gene locus (GenBank BA000025.2, chr6p21.3) around a single-nucleotide
variant. The variant creates one disease-specific 6-mer motif on the 6-mer grid (the reference
carries the motif with one mismatch at the variant base), so the disease can be read from the
variant sequence and from nothing else: the question names the gene and its pathway network,
and disease labels are drawn independently of both. Genes belong to pathway networks; the OOD
splits use networks held out of training (ood_val and ood_test from disjoint networks), whose
genes, DNA backgrounds and question text the model never saw.

`task="vep"` makes variant-effect rows instead: a motif-creating variant is
`pathogenic; <disease>`, a variant that creates no motif is `benign`.
"""
from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

GENE_FASTA = Path(__file__).resolve().parent / "resources" / "dna" / "ba000025_gene_windows.fa.gz"
SPLITS = ("train", "id_val", "ood_val", "id_test", "ood_test")
BASES = "ACGT"
MOTIF_LEN = 6

DISEASES = [
    "Parkinson disease", "Alzheimer disease", "Huntington disease", "Amyotrophic lateral sclerosis",
    "Spinocerebellar ataxia", "Prion disease", "Cushing syndrome", "Hepatocellular carcinoma",
    "Type II diabetes mellitus", "Dilated cardiomyopathy", "Chronic myeloid leukemia", "Basal cell carcinoma",
]

RELATIONS = ["->", "->", "-|", "=>"]


def _disease_motifs(n: int) -> list[str]:
    """Fixed motifs (independent of the data seed) at pairwise Hamming distance >= 3."""
    rng = random.Random(20261122)
    motifs: list[str] = []
    while len(motifs) < n:
        m = "".join(rng.choice(BASES) for _ in range(MOTIF_LEN))
        if len(set(m)) >= 3 and all(sum(a != b for a, b in zip(m, o)) >= 3 for o in motifs):
            motifs.append(m)
    return motifs


MOTIFS = dict(zip(DISEASES, _disease_motifs(len(DISEASES))))


def read_gene_windows(path: Path = GENE_FASTA) -> dict[str, tuple[str, str]]:
    """gene -> (locus description, sequence) from the committed FASTA slice."""
    genes: dict[str, tuple[str, str]] = {}
    name = locus = None
    chunks: list[str] = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            line = line.strip()
            if line.startswith(">"):
                if name:
                    genes[name] = (locus, "".join(chunks))
                name, locus = line[1:].split(maxsplit=1)
                chunks = []
            elif line:
                chunks.append(line.upper())
    if name:
        genes[name] = (locus, "".join(chunks))
    return genes


@dataclass
class SynthConfig:
    seed: int = 0
    task: str = "kegg"                 # kegg | vep
    n_diseases: int = 6
    seq_len: int = 300                 # multiple of 6: the motif sits on the 6-mer grid
    n_networks: int = 16
    genes_per_network: int = 6
    n_ood_val_networks: int = 3
    n_ood_test_networks: int = 3
    sizes: dict = field(default_factory=lambda: {"train": 600, "id_val": 100, "ood_val": 100,
                                                 "id_test": 150, "ood_test": 150})
    benign_fraction: float = 0.4       # vep only


@dataclass
class Network:
    name: str
    genes: list[str]
    definition: str


def _build_networks(cfg: SynthConfig, rng: random.Random, genes: list[str]) -> list[Network]:
    need = cfg.n_networks * cfg.genes_per_network
    if need > len(genes):
        raise ValueError(f"{cfg.n_networks} networks x {cfg.genes_per_network} genes need {need} genes; "
                         f"the DNA fixture has {len(genes)}")
    pool = genes[:]
    rng.shuffle(pool)
    networks = []
    for i in range(cfg.n_networks):
        members = pool[i * cfg.genes_per_network:(i + 1) * cfg.genes_per_network]
        chain = [members[0]]
        for g in members[1:]:
            chain += [rng.choice(RELATIONS), g]
        networks.append(Network(name=f"N{rng.randrange(10000, 99999):05d} signaling module {i + 1}",
                                genes=members, definition=" ".join(chain)))
    return networks


def _find_motifs(seq: str, motifs: set[str]) -> list[int]:
    return [i for i in range(len(seq) - MOTIF_LEN + 1) if seq[i:i + MOTIF_LEN] in motifs]


def _scrub(pair: list[list[str]], motifs: set[str], keep: range, rng: random.Random) -> None:
    """Mutate background bases (identically in every sequence of `pair`) until no motif occurs
    except one lying entirely inside `keep`, the planted site."""
    for _ in range(1000):
        hits = [i for seq in pair for i in _find_motifs("".join(seq), motifs)
                if not (i >= keep.start and i + MOTIF_LEN <= keep.stop)]
        if not hits:
            return
        for i in hits:
            j = rng.choice([j for j in range(i, i + MOTIF_LEN) if j not in keep])
            base = rng.choice([b for b in BASES if b != pair[0][j]])
            for seq in pair:
                seq[j] = base
    raise RuntimeError("could not scrub motifs from background")


def _variant_pair(background: str, motif: str | None, motifs: set[str], seq_len: int,
                  rng: random.Random) -> tuple[str, str, int, str, str]:
    """(reference, variant, snv offset, ref base, alt base). motif None -> a benign SNV."""
    start = rng.randrange(0, len(background) - seq_len + 1)
    window = list(background[start:start + seq_len])
    centre_grid = (seq_len // 2) // MOTIF_LEN
    site = MOTIF_LEN * (centre_grid + rng.randint(-6, 6))
    snv = rng.randrange(MOTIF_LEN)
    pos = site + snv
    if motif is None:
        ref_base = window[pos]
        alt = rng.choice([b for b in BASES if b != ref_base])
    else:
        alt = motif[snv]
        ref_base = rng.choice([b for b in BASES if b != alt
                               and (motif[:snv] + b + motif[snv + 1:]) not in motifs])
        window[site:site + MOTIF_LEN] = list(motif)
    reference, variant = window[:], window[:]
    reference[pos], variant[pos] = ref_base, alt
    # the planted site is kept only in the variant: the reference's near-motif is no motif, and
    # a benign SNV's site holds none either
    keep = range(site, site + MOTIF_LEN) if motif is not None else range(pos, pos + 1)
    _scrub([reference, variant], motifs, keep, rng)
    if motif is None and _find_motifs("".join(variant), motifs):
        return _variant_pair(background, motif, motifs, seq_len, rng)
    return "".join(reference), "".join(variant), pos, ref_base, alt


def _question(task: str, net: Network, gene: str) -> str:
    context = (f"Chromosome Number: 6\nNetwork: {net.name}\n"
               f"Network Definition of the pathway: {net.definition}\n"
               f"Genes in the pathway: {'; '.join(net.genes)}\n\n")
    if task == "vep":
        return context + (f"Is this variant of {gene} pathogenic or benign? "
                          "If pathogenic, which disease does it contribute to?")
    return context + (f"Given this context, what is the biological effect of this {gene} allele, "
                      "specifically what disease does this contribute to?")


def _reasoning(net: Network, gene: str, locus: str, pos: int, ref_b: str, alt_b: str,
               disease: str | None) -> dict:
    # Every step but the motif's meaning can be read off the prompt; the disease can only be read
    # off the variant sequence. Coordinates go in `labels`, not in the text a model must predict.
    steps = [f"The variant changes one base of {gene} in the {net.name} network."]
    if disease is None:
        steps += ["Comparing the reference and variant sequences, the substitution creates no "
                  "disease-associated regulatory motif.",
                  f"{gene} signalling is therefore expected to be preserved."]
    else:
        steps += ["Comparing the reference and variant sequences, the substitution creates a "
                  f"regulatory motif that is the signature of {disease}.",
                  f"Dysregulated {gene} signalling therefore contributes to {disease}."]
    labels = {"gene": gene, "network": net.name, "disease": disease, "locus": locus,
              "variant_position": pos + 1, "ref": ref_b, "alt": alt_b}
    return {"reasoning_steps": steps, "labels": labels}


def generate(cfg: SynthConfig) -> dict[str, list[dict]]:
    if cfg.task not in ("kegg", "vep"):
        raise ValueError(f"task must be 'kegg' or 'vep', got {cfg.task!r}")
    if cfg.seq_len % MOTIF_LEN or cfg.seq_len < 120:
        raise ValueError(f"seq_len must be a multiple of {MOTIF_LEN} and >= 120, got {cfg.seq_len}")
    if not 2 <= cfg.n_diseases <= len(DISEASES):
        raise ValueError(f"n_diseases must be between 2 and {len(DISEASES)}")
    unknown = set(cfg.sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) in sizes: {sorted(unknown)}")
    rng = random.Random(cfg.seed)
    windows = read_gene_windows()
    networks = _build_networks(cfg, rng, sorted(windows))
    n_ood = cfg.n_ood_val_networks + cfg.n_ood_test_networks
    if n_ood >= cfg.n_networks:
        raise ValueError("held-out networks leave none for training")
    by_split_networks = {
        "ood_val": networks[:cfg.n_ood_val_networks],
        "ood_test": networks[cfg.n_ood_val_networks:n_ood],
    }
    train_networks = networks[n_ood:]
    for split in ("train", "id_val", "id_test"):
        by_split_networks[split] = train_networks
    diseases = DISEASES[:cfg.n_diseases]
    motifs = {MOTIFS[d] for d in DISEASES}  # scrub every known motif, used or not
    out: dict[str, list[dict]] = {}
    for split in SPLITS:
        rows = []
        for i in range(cfg.sizes.get(split, 0)):
            net = rng.choice(by_split_networks[split])
            gene = rng.choice(net.genes)
            locus, background = windows[gene]
            benign = cfg.task == "vep" and rng.random() < cfg.benign_fraction
            disease = None if benign else rng.choice(diseases)
            ref, var, pos, ref_b, alt_b = _variant_pair(
                background, None if disease is None else MOTIFS[disease], motifs, cfg.seq_len, rng)
            if cfg.task == "kegg":
                answer = disease
            else:
                answer = "benign" if disease is None else f"pathogenic; {disease}"
            rows.append({
                "id": f"{split}-{i:05d}",
                "question": _question(cfg.task, net, gene),
                "answer": answer,
                "reference_sequence": ref,
                "variant_sequence": var,
                "reasoning": _reasoning(net, gene, locus, pos, ref_b, alt_b, disease),
                "network": net.name,
                "gene": gene,
            })
        out[split] = rows
    return out


def write(out_dir: str | Path, data: dict[str, list[dict]], cfg: SynthConfig, compress: bool = False) -> Path:
    """One `<split>.jsonl` (or deterministic `.jsonl.gz`) per split, plus `synth_meta.json`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = ".jsonl.gz" if compress else ".jsonl"
    for split, rows in data.items():
        payload = "".join(json.dumps(row) + "\n" for row in rows).encode()
        tmp = out / f".{split}{ext}.tmp"
        if compress:
            with gzip.GzipFile(tmp, "wb", mtime=0) as fh:  # mtime 0: same bytes for the same seed
                fh.write(payload)
        else:
            tmp.write_bytes(payload)
        for old in (out / f"{split}.jsonl", out / f"{split}.jsonl.gz"):
            if old.exists():
                old.unlink()
        tmp.replace(out / f"{split}{ext}")
    meta = {"generator": "biopost.data.synth_kegg", "config": cfg.__dict__,
            "diseases": DISEASES[:cfg.n_diseases],
            "motifs": {d: MOTIFS[d] for d in DISEASES[:cfg.n_diseases]},
            "dna_source": "GenBank BA000025.2 (human chr6p21.3), see DATA_LICENSES.md"}
    (out / "synth_meta.json").write_text(json.dumps(meta, indent=1))
    return out


def tokenizer_corpus(n: int = 400) -> list[str]:
    """Text in the style of the synthetic data, to train the tiny test tokenizer's merges."""
    cfg = SynthConfig(seed=12345, n_diseases=len(DISEASES),
                      sizes={"train": n, "ood_val": n // 4, "ood_test": n // 4})
    texts = []
    for task in ("kegg", "vep"):
        cfg.task = task
        for rows in generate(cfg).values():
            for row in rows:
                texts.append(row["question"])
                texts.append("\n".join(row["reasoning"]["reasoning_steps"]))
                texts.append(f"Answer: {row['answer']}")
    return texts
