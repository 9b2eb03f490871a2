"""GPU smoke run and figures: SFT (with and without gradient checkpointing), evaluation decoding
and (when present) GRPO, in bf16 on CUDA, with a Qwen3-1.7B-shaped random model and a
Nucleotide-Transformer-v2-500M-shaped random DNA encoder. Runs through the real entry scripts.

Usage (on the GPU machine, from the repo root):  python bench/gpu_smoke.py --out DIR [--steps 20]
Also: decoding speed (bench/bench_decode.py) and CPT of the backbone, with and without gradient
checkpointing.
Writes DIR/gpu_smoke.json and prints a table. Random weights: the figures are about speed and
memory, not quality.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QWEN3_1P7B = dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                  intermediate_size=6144, head_dim=128, tie_word_embeddings=True, vocab_size=151936,
                  max_position_embeddings=40960, rope_theta=1000000.0)
# NT-v2-500M: 29 layers, hidden 1024, 16 heads, 6-mer vocabulary of 4107 (its gated MLP differs; shape-alike)
NT_500M = dict(hidden_size=1024, num_hidden_layers=29, num_attention_heads=16, intermediate_size=4096,
               max_position_embeddings=2050)


def build_models(root: Path):
    import torch
    from transformers import AutoTokenizer, EsmConfig, EsmForMaskedLM, EsmTokenizer, Qwen3Config, Qwen3ForCausalLM

    from biopost.tiny import resolve_model_path
    text_dir, dna_dir = root / "qwen3-1.7b-shape", root / "nt-500m-shape"
    if not (text_dir / "config.json").exists():
        tok = AutoTokenizer.from_pretrained(resolve_model_path("biopost-tiny/qwen3"))
        cfg = Qwen3Config(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None, **QWEN3_1P7B)
        with torch.device("cuda"):
            model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
        model.save_pretrained(text_dir)
        tok.save_pretrained(text_dir)
        del model
    if not (dna_dir / "config.json").exists():
        tiny = Path(resolve_model_path("biopost-tiny/nt-6mer"))
        tok = EsmTokenizer.from_pretrained(tiny)
        cfg = EsmConfig(vocab_size=len(tok), position_embedding_type="rotary", pad_token_id=1, mask_token_id=2,
                        token_dropout=False, emb_layer_norm_before=False, is_folding_model=False, **NT_500M)
        with torch.device("cuda"):
            model = EsmForMaskedLM(cfg).to(torch.bfloat16)
        model.save_pretrained(dna_dir)
        tok.save_pretrained(dna_dir)
        del model
    torch.cuda.empty_cache()
    return text_dir, dna_dir


def run(cmd, log_path):
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, *map(str, cmd)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return proc.returncode, time.time() - t0


def train_figures(run_dir: Path) -> dict:
    entries = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]
    steps = [e for e in entries if "step_time_s" in e][3:]  # skip warm-up steps
    if not steps:
        return {}
    return {"median_step_s": statistics.median(e["step_time_s"] for e in steps),
            "median_tokens_per_s": statistics.median(e["tokens_per_s"] for e in steps if e.get("tokens_per_s")),
            "peak_memory_gb": max(e.get("peak_memory_gb", 0) for e in steps),
            "final_loss": steps[-1]["loss"], "first_loss": entries[0]["loss"], "n_steps": entries[-1]["step"]}


def cpt_figures(run_dir: Path) -> dict:
    entries = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]
    steps = [e for e in entries if "elapsed_s" in e]
    times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(steps, steps[1:])][1:]  # skip the warm-up step
    if not times:
        return {}
    tokens = steps[1]["tokens"] - steps[0]["tokens"]
    return {"median_step_s": statistics.median(times), "tokens_per_step": tokens,
            "tokens_per_s": tokens / statistics.median(times), "peak_memory_gb": max(e.get("max_mem_gb", 0) for e in steps),
            "first_loss": steps[0]["loss"], "final_loss": steps[-1]["loss"], "n_steps": steps[-1]["step"]}


def save(out: Path, result: dict) -> None:
    (out / "gpu_smoke.json").write_text(json.dumps(result, indent=1, default=str))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", required=True)
    p.add_argument("--work", default="/tmp/biopost-gpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--grpo_steps", type=int, default=3)
    p.add_argument("--cpt_steps", type=int, default=6)
    p.add_argument("--profile", action="store_true", help="write decode_profile.txt (torch.profiler op tables)")
    p.add_argument("--only", default="sft,eval,grpo,decode,cpt", help="parts to run (sft: with and without "
                   "gradient checkpointing; the others need the SFT run without it)")
    args = p.parse_args()
    import torch
    import transformers
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("BIOPOST_CACHE_DIR", str(work / "cache"))
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "transformers": transformers.__version__, "date": time.strftime("%Y-%m-%d")}
    t0 = time.time()
    text_dir, dna_dir = build_models(work)
    result["build_models_s"] = time.time() - t0
    data = work / "kegg_1200bp"
    if not data.exists():
        subprocess.run([sys.executable, "-m", "biopost.cli", "data", "synth-kegg", "--out", str(data), "--seq_len", "1200",
                        "--sizes", '{"train": 256, "id_val": 32, "ood_val": 32, "id_test": 64, "ood_test": 64}'],
                       cwd=ROOT, check=True)
    common = ["--data_path", data, "--text_model_name", text_dir, "--dna_model_name", dna_dir,
              "--lora_rank", "16", "--lora_alpha", "32", "--max_length_dna", "1200", "--max_length_text", "1024",
              "--per_device_train_batch_size", args.batch, "--gradient_accumulation_steps", "1",
              "--max_steps", args.steps, "--save_steps", "1000", "--learning_rate", "1e-4", "--logging_steps", "1",
              "--resume", "never", "--bf16", "true"]
    parts = set(args.only.split(","))
    for gc in ("false", "true") if "sft" in parts else ("false",):
        run_dir = work / f"sft_gc_{gc}"
        rc, wall = run([ROOT / "BioReason/train_dna_qwen.py", *common, "--gradient_checkpointing", gc,
                        "--output_dir", run_dir], out / f"sft_gc_{gc}.log")
        result[f"sft_gc_{gc}"] = {"rc": rc, "wall_s": wall, **(train_figures(run_dir) if rc == 0 else {})}
    # evaluation decoding throughput on the SFT checkpoint (random weights: runs to max_new_tokens)
    run_dir = work / "sft_gc_false"
    if result["sft_gc_false"]["rc"] == 0 and "eval" in parts:
        t0 = time.time()
        rc, wall = run([ROOT / "BioReason/eval_kegg_dna_vllm.py", "--run_dir", run_dir, "--eval_split", "id",
                        "--max_examples", "32", "--batch_size", "16", "--max_new_tokens", "128"], out / "eval.log")
        metrics = run_dir / "eval/id/metrics.json"
        result["eval"] = {"rc": rc, "wall_s": wall, "examples": 32, "batch_size": 16, "max_new_tokens": 128,
                          "new_tokens_per_s_upper_bound": 32 * 128 / wall if rc == 0 else None,
                          "metrics_written": metrics.exists()}
    grpo = ROOT / "BioReason/train_grpo.py"
    if grpo.exists() and result["sft_gc_false"]["rc"] == 0 and "grpo" in parts:
        grpo_dir = work / "grpo"
        rc, wall = run([grpo, "--data_path", data, "--init", "sft", "--sft_checkpoint", run_dir / "checkpoints/last",
                        "--text_model_name", text_dir, "--dna_model_name", dna_dir, "--num_generations", "8",
                        "--per_device_train_batch_size", "8", "--max_completion_length", "128", "--max_steps", args.grpo_steps,
                        "--beta", "0.001", "--save_steps", "1000", "--logging_steps", "1", "--resume", "never",
                        "--output_dir", grpo_dir], out / "grpo.log")
        entry = {"rc": rc, "wall_s": wall}
        log = grpo_dir / "train_log.jsonl"
        if log.exists():
            rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
            entry["steps"] = rows
        result["grpo"] = entry
    save(out, result)
    # decoding: the shared generation loop against transformers' generate, same model and prompts
    if result["sft_gc_false"]["rc"] == 0 and "decode" in parts:
        rc, wall = run([ROOT / "bench/bench_decode.py", "--checkpoint", run_dir / "checkpoints/last", "--data", data,
                        "--batch_sizes", "16,64", "--new_tokens", "128", "--out", out / "decode.json",
                        *(["--profile", out / "decode_profile.txt", "--impls", "dynamic"] if args.profile else [])],
                       out / "decode.log")
        result["decode"] = {"rc": rc, "wall_s": wall}
        if (out / "decode.json").exists():
            result["decode"]["results"] = json.loads((out / "decode.json").read_text())["results"]
        save(out, result)
    # CPT: full fine-tuning of the 1.7B-shaped backbone on packed 4,096-token blocks, 65k tokens per step
    for gc in ("false", "true") if "cpt" in parts else ():
        cpt_dir = work / f"cpt_gc_{gc}"
        rc, wall = run([ROOT / "BioReason/train_finefineweb_midtrain.py", "--text_model_name", text_dir,
                        "--data_path", "biopost:bio_text/train", "--eval_data_path", "biopost:bio_text/heldout.jsonl.gz",
                        "--eval_docs", "40", "--max_length", "4096", "--per_device_train_batch_size", "2",
                        "--gradient_accumulation_steps", "8", "--max_steps", str(args.cpt_steps), "--save_steps", "1000",
                        "--logging_steps", "1", "--eval_steps", "0", "--learning_rate", "1e-5", "--lora_rank", "0",
                        "--gradient_checkpointing", gc, "--resume", "never", "--output_dir", cpt_dir],
                       out / f"cpt_gc_{gc}.log")
        result[f"cpt_gc_{gc}"] = {"rc": rc, "wall_s": wall, **(cpt_figures(cpt_dir) if rc == 0 else {})}
        save(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "grpo"}, indent=1, default=str))
    if "grpo" in result:
        print("grpo rc", result["grpo"]["rc"], "wall", round(result["grpo"]["wall_s"], 1))


if __name__ == "__main__":
    main()
