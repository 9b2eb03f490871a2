#!/usr/bin/env python3
"""Rebuild biopost/resources/bio_text/ (the CPT demo and test corpus; not used at run time).

Source: bio-post's shared fixture `bio_text.jsonl.gz` (35,258 documents), itself built from
  * Gene Ontology term definitions, go-basic.obo release 2022-07-01 via Bioconductor GO.db 3.16.0,
    "<name> (<namespace>): <definition>", CC BY 4.0;
  * UniProtKB/Swiss-Prot CC FUNCTION text, via EMBOSS 6.6.0 and Biopython 1.88 test data,
    "<protein name> (<organism>): <function>".
Of the Swiss-Prot documents we keep only entries whose own UniProt copyright block says CC BY 4.0
(`uniprot_licence_notice` in the shared `swissprot_go.jsonl.gz`): most entries of that old test data
carry the former CC BY-ND notice, and a training corpus should not lean on a no-derivatives licence.

Layout written (rows are `{"text", "source", "id"}`, the FineFineWeb `{"text": ...}` format plus
provenance; gzip with mtime 0 and no file name, so a rebuild gives identical bytes):
  train/bio_text-0000{0,1,2}.jsonl.gz   TRAIN_DOCS documents in SHARDS shards
  heldout.jsonl.gz                      HELDOUT_DOCS documents, disjoint from train
Documents are a seeded random sample, so every shard mixes the three GO namespaces.

Usage: python data/build_bio_text.py SHARED_DATA_DIR [OUT_DIR]   (default OUT_DIR: biopost/resources/bio_text)
"""
import gzip
import json
import random
import sys
from pathlib import Path

SEED = 0
HELDOUT_DOCS = 300
TRAIN_DOCS = 4800
SHARDS = 3


def write_jsonl_gz(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as fh:
        for row in rows:
            fh.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))


def main(shared: str, out: str = "biopost/resources/bio_text") -> None:
    shared_dir, out_dir = Path(shared), Path(out)
    with gzip.open(shared_dir / "swissprot_go.jsonl.gz", "rt", encoding="utf-8") as fh:
        cc_by = {r["protein_id"] for r in map(json.loads, fh) if r["uniprot_licence_notice"] == "CC-BY-4.0"}
    docs = []
    with gzip.open(shared_dir / "bio_text.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["source"] == "swissprot_function" and row["id"] not in cc_by:
                continue
            docs.append({"text": row["text"], "source": row["source"], "id": row["id"]})
    swissprot = [d for d in docs if d["source"] == "swissprot_function"]
    go = [d for d in docs if d["source"] == "gene_ontology"]
    rng = random.Random(SEED)
    rng.shuffle(go)
    picked = swissprot + go[:HELDOUT_DOCS + TRAIN_DOCS - len(swissprot)]
    rng.shuffle(picked)
    heldout, train = picked[:HELDOUT_DOCS], picked[HELDOUT_DOCS:]
    write_jsonl_gz(out_dir / "heldout.jsonl.gz", heldout)
    per = -(-len(train) // SHARDS)
    for i in range(SHARDS):
        write_jsonl_gz(out_dir / "train" / f"bio_text-{i:05d}.jsonl.gz", train[i * per:(i + 1) * per])
    print(f"{len(train)} train documents in {SHARDS} shards, {len(heldout)} held out; "
          f"Swiss-Prot (CC BY 4.0): {len(swissprot)}, GO: {len(picked) - len(swissprot)}")


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    main(*sys.argv[1:])
