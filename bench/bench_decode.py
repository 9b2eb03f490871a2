"""Decoding speed of the shared generation path (biopost.generate: the loop behind evaluation,
inference and GRPO rollouts) against transformers' own `generate` on the same model and the same
prompts (DNA embeddings spliced in, passed as inputs_embeds), greedy, a fixed number of new tokens.

Usage (GPU machine, repo root):
    python bench/bench_decode.py --checkpoint RUN/checkpoints/last --data DIR [--new_tokens 128]
Writes one JSON object per (engine, batch size) to stdout and, with --out, to a file.
With random weights nothing stops early; `new_tokens` counts what was actually produced.
"""
import argparse
import json
import time

import torch


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def profile(model, llm, examples, emb, ctx, device, path):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from biopost.data.examples import collate
    from biopost.generate import SamplingConfig, generate
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    batch = collate(examples, model.tokenizer.pad_token_id, emb, left_pad=True, device=device)
    with torch.no_grad(), ctx:
        embeds = model.embed(batch["input_ids"], batch["bio_features"])
    runs = {
        "biopost.generate": lambda: generate(model, examples, emb, SamplingConfig(max_new_tokens=16), device=device,
                                             autocast_ctx=ctx),
        "transformers generate (dynamic)": lambda: llm.generate(
            inputs_embeds=embeds, attention_mask=batch["attention_mask"], do_sample=False, max_new_tokens=16,
            min_new_tokens=16, pad_token_id=model.tokenizer.pad_token_id),
    }
    with open(path, "w") as f:
        for name, fn in runs.items():
            with torch.no_grad(), ctx:
                fn()
                sync()
                with torch_profile(activities=acts) as prof:
                    fn()
                    sync()
            for key in ("self_cpu_time_total", "cpu_time_total"):
                f.write(f"===== {name}: sorted by {key}\n")
                f.write(prof.key_averages().table(sort_by=key, row_limit=30) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="directory with an id_test split")
    p.add_argument("--batch_sizes", default="16,64")
    p.add_argument("--new_tokens", type=int, default=128)
    p.add_argument("--out")
    p.add_argument("--impls", default="dynamic,static", help="transformers cache implementations to compare")
    p.add_argument("--profile", help="also profile 16 decode steps of each eager engine at the first batch size "
                   "(torch.profiler) and write the op tables to this file")
    args = p.parse_args()

    from biopost.data.examples import collate, encode_prompt
    from biopost.data.io import load_split_rows
    from biopost.encoders.cache import EmbeddingCache
    from biopost.generate import SamplingConfig, generate
    from biopost.model.bio_model import BioReasoningModel
    from biopost.tasks import get_task
    from biopost.runtime import autocast, base_dtype, pick_device

    device = pick_device("auto")
    model = BioReasoningModel.load(args.checkpoint, device=device, dtype=base_dtype(device, True)).eval()
    cache = EmbeddingCache(model.encoders["dna"])
    task = get_task("kegg")
    rows = [r for r, _ in load_split_rows(args.data, ("id_test",))["id_test"]]
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    examples = [encode_prompt(model, task, rows[i % len(rows)]) for i in range(max(sizes))]
    cache.ensure(sorted({s for ex in examples for _, s in ex.bio}))
    emb = lambda m, s: cache.get(s)  # noqa: E731
    ctx = autocast(device, True)
    llm = model.base_llm()
    results = []
    for B in sizes:
        batch_examples = examples[:B]
        # ours
        cfg = SamplingConfig(max_new_tokens=args.new_tokens)
        generate(model, batch_examples[:2], emb, SamplingConfig(max_new_tokens=4), device=device, autocast_ctx=ctx)
        sync()
        t0 = time.perf_counter()
        outs = generate(model, batch_examples, emb, cfg, device=device, autocast_ctx=ctx)
        sync()
        dt = time.perf_counter() - t0
        n = sum(len(o.tokens) for o in outs)
        results.append({"engine": "biopost.generate (DynamicCache loop)", "batch": B, "seconds": dt,
                        "new_tokens": n, "tokens_per_s": n / dt, "steps_per_s": max(len(o.tokens) for o in outs) / dt})
        # the static engine: first call (cache allocation + CUDA-graph capture) reported on its own
        try:
            from biopost.generate.static import StaticEngine
            static = StaticEngine(model, emb, device=device, autocast_ctx=lambda: autocast(device, True))
            t0 = time.perf_counter()
            static.generate(batch_examples, cfg)
            sync()
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            souts = static.generate(batch_examples, cfg)
            sync()
            sdt = time.perf_counter() - t0
            sn = sum(len(o.tokens) for o in souts)
            same = [a.tokens == b.tokens for a, b in zip(outs, souts)]
            prefix = [next((i for i, (x, y) in enumerate(zip(a.tokens, b.tokens)) if x != y), len(a.tokens))
                      for a, b in zip(outs, souts)]
            results.append({"engine": "static engine (StaticCache + CUDA graph)", "batch": B, "seconds": sdt,
                            "new_tokens": sn, "tokens_per_s": sn / sdt,
                            "steps_per_s": max(len(o.tokens) for o in souts) / sdt, "first_call_seconds": first,
                            "graphs_captured": static.captures, "identical_greedy_rows": sum(same),
                            "rows": len(same), "mean_common_prefix": sum(prefix) / len(prefix)})
            del static
        except Exception as e:  # noqa: BLE001 - an engine that fails is a result too
            import traceback
            results.append({"engine": "static engine (StaticCache + CUDA graph)", "batch": B,
                            "error": traceback.format_exc()[-1500:]})
        # transformers generate on the same embedded prompts
        batch = collate(batch_examples, model.tokenizer.pad_token_id, emb, left_pad=True, device=device)
        with torch.no_grad(), ctx:
            embeds = model.embed(batch["input_ids"], batch["bio_features"])
        for impl in args.impls.split(","):
            kw = dict(inputs_embeds=embeds, attention_mask=batch["attention_mask"], do_sample=False,
                      max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                      pad_token_id=model.tokenizer.pad_token_id)
            if impl == "static":
                kw["cache_implementation"] = "static"
            try:
                with torch.no_grad(), ctx:
                    # warm-up of the full shape: a static cache makes generate compile the
                    # forward once per shape; that first call is reported on its own
                    t0 = time.perf_counter()
                    llm.generate(**kw)
                    sync()
                    first = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    out = llm.generate(**kw)
                    sync()
                dt = time.perf_counter() - t0
                n = int(out.shape[0] * out.shape[1])
                results.append({"engine": f"transformers generate ({impl} cache)", "batch": B, "seconds": dt,
                                "new_tokens": n, "tokens_per_s": n / dt, "steps_per_s": out.shape[1] / dt,
                                "first_call_seconds": first})
            except Exception as e:  # an engine that fails is a result too
                results.append({"engine": f"transformers generate ({impl} cache)", "batch": B,
                                "error": f"{type(e).__name__}: {e}"[:300]})
        for r in results[-2 - len(args.impls.split(",")):]:
            print(json.dumps(r), flush=True)
    if args.profile:
        profile(model, llm, examples[:sizes[0]], emb, ctx, device, args.profile)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                       "torch": torch.__version__, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
