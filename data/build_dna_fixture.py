#!/usr/bin/env python3
"""Rebuild BioReason/bioreason/resources/dna/ba000025_gene_windows.fa.gz (not used at run time).

Source: GenBank BA000025.2 (Homo sapiens chromosome 6p21.3, HLA class I region), as shipped in
EMBOSS 6.6.0 test data and collected in bio-post's shared fixtures (human_dna.fa.gz and
human_dna_features.tsv.gz). For every annotated gene at least WINDOW bp long we keep the first
WINDOW bp of its locus on the + strand: real human sequence as background for the synthetic
KEGG-like generator. Usage: build_dna_fixture.py SHARED_DATA_DIR OUT_FASTA_GZ
"""
import csv
import gzip
import io
import sys

WINDOW = 1200


def read_fasta(path, wanted):
    seq, name = [], None
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if line.startswith(">"):
                if name == wanted:
                    return "".join(seq)
                name, seq = line[1:].split()[0], []
            elif name == wanted:
                seq.append(line.strip())
    return "".join(seq) if name == wanted else None


def main(shared, out):
    genome = read_fasta(f"{shared}/human_dna.fa.gz", "BA000025.2")
    loci = {}
    with gzip.open(f"{shared}/human_dna_features.tsv.gz", "rt") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if row["seq_id"] != "BA000025.2" or row["feature"] != "gene" or not row["gene"]:
                continue
            start, end = int(row["start"]), int(row["end"])
            if end - start + 1 >= WINDOW and row["gene"] not in loci:
                loci[row["gene"]] = start
    buf = io.StringIO()
    for gene in sorted(loci, key=lambda g: loci[g]):
        start = loci[gene]
        window = genome[start - 1:start - 1 + WINDOW]
        if "N" in window:
            continue
        buf.write(f">{gene} BA000025.2:{start}-{start + WINDOW - 1}(+)\n")
        for i in range(0, len(window), 60):
            buf.write(window[i:i + 60] + "\n")
    with gzip.GzipFile(out, "wb", mtime=0) as fh:
        fh.write(buf.getvalue().encode())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
