#!/usr/bin/env python3
"""Ask a trained DNA reasoning model about one variant, or about every row of a jsonl file.

One example:
  python BioReason/reason.py --checkpoint runs/sft_tiny/checkpoints/last \
      --reference_sequence ACGT... --variant_sequence ACGA... --question "Which disease ...?"
A file (rows with reference_sequence, variant_sequence, question; `answer` is shown if present):
  python BioReason/reason.py --checkpoint CKPT --input_jsonl variants.jsonl [--output_jsonl out.jsonl]
Prints the reasoning (the think block) and the parsed answer of each example.
"""
import argparse
import json
import sys



def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="reason.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint directory (e.g. RUN/checkpoints/last) or a merged model")
    p.add_argument("--task", default="kegg", help="kegg or vep (the prompt format)")
    p.add_argument("--reference_sequence")
    p.add_argument("--variant_sequence")
    p.add_argument("--question")
    p.add_argument("--input_jsonl", help="one JSON object per line with the three fields above")
    p.add_argument("--output_jsonl", help="also write {id, generation, reasoning, answer} rows here")
    p.add_argument("--max_new_tokens", type=int, default=512)
    p.add_argument("--do_sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_length_dna", type=int, default=0, help="centre-crop longer sequences (0 = off)")
    p.add_argument("--device", default="auto")
    p.add_argument("--engine", default="auto", help="generation engine: auto (static on CUDA, hf on CPU), static or hf")
    p.add_argument("--trust_remote_code", action="store_true",
                   help="allow a checkpoint whose models ship their own code (only one you trust)")
    args = p.parse_args(argv)
    from biopost.errors import UserError
    try:
        return reason(p, args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def reason(p, args) -> int:
    from collections import Counter

    from biopost.data.io import Source
    from biopost.data.schema import Truncation, validate_row
    from biopost.tasks import get_task
    task = get_task(args.task)
    if args.input_jsonl:
        from biopost.data.io import read_file
        raw = read_file(args.input_jsonl)
    elif args.reference_sequence and args.variant_sequence and args.question:
        raw = [({"id": "example", "reference_sequence": args.reference_sequence,
                 "variant_sequence": args.variant_sequence, "question": args.question}, Source("command line", 1))]
    else:
        p.error("give --input_jsonl, or all of --reference_sequence, --variant_sequence and --question")
    schema = task.schema.__class__(name=task.schema.name, text=("question",), sequences=task.schema.sequences)
    truncation = {task.modality: Truncation(args.max_length_dna)}
    rows = [validate_row(row, schema, src, truncation, Counter()) for row, src in raw]

    from biopost.data.examples import encode_prompt
    from biopost.encoders.cache import EmbeddingCache
    from biopost.metrics.parse import split_reasoning
    from biopost.eval.run import cache_lookup
    from biopost.generate import SamplingConfig
    from biopost.generate.engine import ENGINES, build_engine
    from biopost.model.bio_model import BioReasoningModel
    from biopost.runtime import autocast, base_dtype, pick_device
    ENGINES.get(args.engine)  # an unknown engine fails before the model loads
    device = pick_device(args.device)
    model = BioReasoningModel.load(args.checkpoint, device=device, dtype=base_dtype(device),
                                   trust_remote_code=args.trust_remote_code).eval()
    caches = {m: EmbeddingCache(enc) for m, enc in model.encoders.items()}
    engine = build_engine(args.engine, model, cache_lookup(caches), device=device,
                          autocast_ctx=lambda: autocast(device))
    examples = [encode_prompt(model, task, row, fallback_id=f"row {i + 1}") for i, row in enumerate(rows)]
    cfg = SamplingConfig(max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, temperature=args.temperature,
                         top_p=args.top_p, top_k=args.top_k, seed=args.seed)
    out = open(args.output_jsonl, "w") if args.output_jsonl else None
    for start in range(0, len(examples), args.batch_size):
        chunk = examples[start:start + args.batch_size]
        for ex, row, gen in zip(chunk, rows[start:start + args.batch_size], engine.generate(chunk, cfg)):
            reasoning, _ = split_reasoning(gen.text)
            answer = task.parse(gen.text)
            print(f"=== {ex.id}")
            print(f"reasoning:\n{(reasoning or '').strip() or '(no think block)'}")
            print(f"answer: {answer if answer is not None else '(unparsed)'}"
                  + (f"   [gold: {row['answer']}]" if row.get("answer") else "")
                  + ("" if gen.stopped else "   [truncated at --max_new_tokens]"))
            if out:
                out.write(json.dumps({"id": ex.id, "generation": gen.text, "reasoning": reasoning,
                                      "answer": answer, "stopped": gen.stopped}) + "\n")
    if out:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
