#!/usr/bin/env python3
"""Ask a trained protein reasoning model for the GO terms of one protein, or of every protein in
a FASTA or jsonl file. Prints the reasoning (the think block) and the GO terms of the answer with
their names and aspects (from the packaged Gene Ontology, bioreason_pro.ontology).

One protein:
  python BioReason-Pro/predict.py --checkpoint runs/protein_sft_tiny/checkpoints/last \\
      --sequence MKTAYIAKQR... --organism "Homo sapiens"
A file (FASTA: id = the header's first word, organism from a UniProt OS= field; jsonl: rows with
`sequence` and optional protein_id, organism, interpro_formatted, ppi_formatted, go_pred):
  python BioReason-Pro/predict.py --checkpoint CKPT --fasta proteins.fa [--output_jsonl out.jsonl]
`--num_samples k` (k >= 2) samples k answers and scores each GO term by the fraction naming it.
"""
import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="predict.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint directory (e.g. RUN/checkpoints/last) or a merged model")
    p.add_argument("--task", default="go", help="the prompt format (go)")
    src = p.add_argument_group("input (one of)")
    src.add_argument("--sequence", help="one protein sequence (amino acids)")
    src.add_argument("--fasta", help="a FASTA file (plain or gzipped)")
    src.add_argument("--input_jsonl", help="one JSON object per line with `sequence`")
    p.add_argument("--protein_id", default="protein", help="id of --sequence")
    p.add_argument("--organism", default=None, help="organism of --sequence (or of every FASTA record without OS=)")
    p.add_argument("--interpro", default=None, help="InterPro context for --sequence (prompt context only)")
    p.add_argument("--ppi", default=None, help="protein-protein interaction context for --sequence")
    p.add_argument("--go_pred", default=None, help="GO-GPT predictions for --sequence (prompt context only)")
    p.add_argument("--aspects", default=None, help="aspects to ask for, e.g. MF,CC (default: all three)")
    p.add_argument("--output_jsonl", help="also write {protein_id, generation, reasoning, go_terms} rows here")
    p.add_argument("--max_new_tokens", type=int, default=1024)
    p.add_argument("--num_samples", type=int, default=1, help="k >= 2: sample k answers, score terms by frequency")
    p.add_argument("--do_sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_length_protein", type=int, default=0, help="centre-crop longer proteins (0 = off)")
    p.add_argument("--device", default="auto")
    p.add_argument("--engine", default="auto", help="generation engine: auto (static on CUDA, hf on CPU), static or hf")
    p.add_argument("--trust_remote_code", action="store_true",
                   help="allow a checkpoint whose models ship their own code (only one you trust)")
    return p


def read_inputs(p, args) -> list:
    from biopost.data.io import Source, read_file
    from bioreason_pro.predict_util import read_fasta
    given = [x for x in (args.sequence, args.fasta, args.input_jsonl) if x]
    if len(given) != 1:
        p.error("give exactly one of --sequence, --fasta, --input_jsonl")
    if args.sequence:
        row = {"protein_id": args.protein_id, "sequence": args.sequence}
        for key, value in (("organism", args.organism), ("interpro_formatted", args.interpro),
                           ("ppi_formatted", args.ppi), ("go_pred", args.go_pred)):
            if value:
                row[key] = value
        raw = [(row, Source("command line", 1))]
    elif args.fasta:
        raw = [(dict(r, **({"organism": args.organism} if args.organism and "organism" not in r else {})),
                Source(args.fasta, i + 1)) for i, r in enumerate(read_fasta(args.fasta))]
    else:
        raw = read_file(args.input_jsonl)
    if args.aspects:
        raw = [(dict(r, aspects=args.aspects), s) for r, s in raw]
    return raw


def predict(p, args) -> int:
    from collections import Counter

    from biopost.data.examples import encode_prompt
    from biopost.data.schema import RowSchema, Truncation, validate_row
    from biopost.encoders.cache import EmbeddingCache
    from biopost.metrics.parse import split_reasoning
    from biopost.eval.run import cache_lookup
    from biopost.files import write_text_atomic
    from biopost.generate import SamplingConfig
    from biopost.generate.engine import ENGINES, build_engine
    from biopost.model.bio_model import BioReasoningModel
    from biopost.tasks import get_task
    from biopost.runtime import autocast, base_dtype, pick_device
    from bioreason_pro.go_scored import score_samples
    from bioreason_pro.predict_util import describe_terms

    task = get_task(args.task)
    if args.num_samples < 1:
        p.error("--num_samples must be >= 1")
    raw = read_inputs(p, args)
    schema = RowSchema(name=f"{task.name}-predict", sequences=task.schema.sequences)
    truncation = {task.modality: Truncation(args.max_length_protein)}
    rows = [validate_row(row, schema, src, truncation, Counter()) for row, src in raw]

    ENGINES.get(args.engine)  # an unknown engine fails before the model loads
    device = pick_device(args.device)
    model = BioReasoningModel.load(args.checkpoint, device=device, dtype=base_dtype(device),
                                   trust_remote_code=args.trust_remote_code).eval()
    caches = {m: EmbeddingCache(enc) for m, enc in model.encoders.items()}
    engine = build_engine(args.engine, model, cache_lookup(caches), device=device,
                          autocast_ctx=lambda: autocast(device))
    examples = [encode_prompt(model, task, row, fallback_id=f"row {i + 1}") for i, row in enumerate(rows)]
    k = args.num_samples
    base = SamplingConfig(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample or k > 1,
                          temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    from dataclasses import replace
    configs = [replace(base, seed=args.seed + j) for j in range(k)]
    results = []
    for start in range(0, len(examples), args.batch_size):
        chunk = examples[start:start + args.batch_size]
        runs = [engine.generate(chunk, c) for c in configs]
        for i, ex in enumerate(chunk):
            gens = [r[i] for r in runs]
            parsed = [task.parse(g.text) for g in gens]
            scores = score_samples(parsed) if k > 1 else None
            ids = list(scores) if scores else (parsed[0] or [])
            reasoning, _ = split_reasoning(gens[0].text)
            terms = describe_terms(ids, scores)
            results.append({"protein_id": ex.id, "generation": gens[0].text, "reasoning": reasoning,
                            "parsed": parsed[0] is not None or bool(scores), "go_terms": terms,
                            "stopped": all(g.stopped for g in gens),
                            **({"samples": [g.text for g in gens]} if k > 1 else {})})
            print(f"=== {ex.id}")
            print(f"reasoning:\n{(reasoning or '').strip() or '(no think block)'}")
            if not terms:
                print("GO terms: (none)" if parsed[0] is not None or scores else "GO terms: (unparsed answer)")
            else:
                print("GO terms:")
                for t in terms:
                    score = f"  score {t['score']:.2f}" if t.get("score") is not None else ""
                    name = t["name"] or "(not in the ontology)"
                    status = "" if t["status"] == "term" else f"  [{t['status']}]"
                    print(f"  {t['id']}  {t['aspect'] or '--'}  {name}{score}{status}")
            if not results[-1]["stopped"]:
                print("  [truncated at --max_new_tokens]")
    if args.output_jsonl:
        write_text_atomic(args.output_jsonl, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
    return 0


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    from biopost.stage import run_stage
    return run_stage(lambda a: predict(p, a), args)


if __name__ == "__main__":
    sys.exit(main())
