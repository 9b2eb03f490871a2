"""The protein pipeline at the published scale on one GPU: a random-weight Qwen3-4B-shaped LLM with
an ESM-3-small-shaped encoder (esm's own ESM3 class, esm 3.4.x on the GPU image), through the real
entry points: SFT steps (train_protein_llm.py) and GRPO steps (train_protein_grpo.py) in bf16 with
LoRA and gradient checkpointing. Then the fit: under a memory cap of 80 of the card's GiB (an
80 GB card), which (completions per micro-batch, G, completion length) runs a GRPO update and
which is the first to fail.

The fit uses a bench-only engine that returns random completions of exactly the requested length
(random weights never stop, so that is also what the real engine produces), so each point costs
the update pass, not minutes of host-bound decoding; one point also runs the real `hf` engine to
measure a rollout's memory and time. Everything else is the production GRPO loop.

Usage (GPU machine, repo root, esm 3.4.x importable):
    python bench/bench_protein_fit.py --work /tmp/fit --out $OUT/protein_fit.jsonl
"""
import argparse
import gc
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import torch

import bioreason_pro.modality  # noqa: F401  (registers the protein modality where no entry point is installed)

QWEN3_4B = dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                rope_theta=1_000_000.0, tie_word_embeddings=True, rms_norm_eps=1e-6)


def emit(out, **row):
    line = json.dumps(row, default=str)
    print(line, flush=True)
    with open(out, "a") as f:
        f.write(line + "\n")


def build_models(work: Path):
    """Random-weight Qwen3-4B shape (the tiny tokenizer: the vocabulary rows are the real size) and
    ESM-3 small shape (esm's ESM3 class, written as this backend's safetensors directory)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config

    from bioreason_pro.esm_encoder import build_model, save_pretrained
    from bioreason_pro.esm_names import PUBLISHED
    from biopost.tiny import resolve_model_path
    qwen, esm_dir = work / "qwen3-4b", work / "esm3-small"
    if not (qwen / "config.json").is_file():
        tok = AutoTokenizer.from_pretrained(resolve_model_path("biopost-tiny/qwen3"))
        cfg = Qwen3Config(**QWEN3_4B, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        model.save_pretrained(qwen)
        tok.save_pretrained(qwen)
        del model
    if not (esm_dir / "esm_config.json").is_file():
        config = {k: v for k, v in PUBLISHED["esm3_sm_open_v1"].items() if k not in ("repo", "file")}
        with torch.device("cuda"):
            model = build_model(config)
        save_pretrained(model, config, esm_dir)
        del model
    gc.collect()
    torch.cuda.empty_cache()
    return qwen, esm_dir


def esm_checks(esm_dir: Path, out):
    """esm 3.4.x on this stack: which version, the backend's layer, batched = alone, throughput."""
    import esm

    from bioreason_pro.esm_encoder import EsmEncoder
    enc = EsmEncoder(str(esm_dir), layer="auto", device="cuda", batch_size=8)
    rng = torch.Generator().manual_seed(0)
    alphabet = "ACDEFGHIKLMNPQRSTVWY"
    seqs = ["M" + "".join(alphabet[i] for i in torch.randint(0, 20, (int(n),), generator=rng))
            for n in torch.randint(200, 500, (8,), generator=rng)]
    alone = [enc.encode([s])[0] for s in seqs]
    batched = enc.encode(seqs)
    diff = max(float((a - b).abs().max()) for a, b in zip(alone, batched))
    scale = max(float(a.abs().max()) for a in alone)
    L = 512
    long = ["M" + "".join(alphabet[i] for i in torch.randint(0, 20, (L - 1,), generator=rng)) for _ in range(8)]
    enc.encode(long)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(3):
        enc.encode(long)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / 3
    imported = sorted({m.split(".")[0] for m in sys.modules} & {"biotite", "brotli", "cloudpathlib", "msgpack_numpy",
                                                                 "zstd", "tenacity", "Bio", "attr", "httpx"})
    emit(out, what="esm", esm_version=esm.__version__, torch=torch.__version__, layer=enc.layer,
         batched_vs_alone_max_abs=diff, max_abs=scale, fp32=True,
         seqs_per_s_512=8 / dt, peak_gb=torch.cuda.max_memory_allocated() / 2**30, imported_of_carried=imported)
    del enc
    gc.collect()
    torch.cuda.empty_cache()


def synth_data(work: Path, length: int) -> Path:
    from bioreason_pro.synth_go import SynthGoConfig, generate, write
    data = work / f"go_{length}"
    if not (data / "train.jsonl").is_file():
        cfg = SynthGoConfig(seed=0, n_train=64, n_id_val=8, n_ood_val=8, n_id_test=8, n_ood_test=8,
                            min_length=length - 20, max_length=length)
        write(data, generate(cfg), cfg)
    return data


def read_log(run: Path):
    lines = (run / "train_log.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if x.strip()]


def sft(work, qwen, esm_dir, data, out, steps=6, config="BioReason-Pro/configs/sft_4b.yaml"):
    sys.path.insert(0, "BioReason-Pro")
    from train_protein_llm import main as sft_main
    run = work / "sft"
    shutil.rmtree(run, ignore_errors=True)
    argv = ["--config", config, "--training_stage", "2", "--data_path", str(data),
            "--output_dir", str(run), "--text_model_name", str(qwen), "--protein_model_name", str(esm_dir),
            "--max_steps", str(steps), "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
            "--logging_steps", "1", "--save_steps", "1000", "--resume", "never", "--cache_dir", str(work / "cache")]
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    rc = sft_main(argv)
    log = read_log(run)
    times = [e["step_time_s"] for e in log if "step_time_s" in e]
    emit(out, what="sft", rc=rc, wall_s=time.perf_counter() - t0, steps=len(times), step_time_s=times,
         tokens_per_s=[e.get("tokens_per_s") for e in log], peak_gb=max(e.get("peak_memory_gb", 0) for e in log),
         batch=4, lora_rank=128, gradient_checkpointing=True)
    return run


class RandomCompletions:
    """Bench-only engine: `length` random ordinary tokens per prompt, never stopping (what random
    weights produce), so the fit measures the update pass and not host-bound decoding."""

    def __init__(self, model, embeddings, device=None, autocast_ctx=None, **_):
        self.model = model
        self.g = torch.Generator().manual_seed(0)

    def generate(self, examples, sampling):
        from biopost.generate.sampling import Generation
        gens = []
        for i, _ in enumerate(examples):
            ids = torch.randint(10, 900, (sampling.max_new_tokens,), generator=self.g).tolist()
            # rewards that vary within a group, so advantages (and gradients) are not all zero
            gens.append(Generation(tokens=ids, text="<think>x</think> GO:0003824" if i % 2 else "", stopped=False))
        return gens

    def sync_weights(self, model):
        pass


def grpo_point(work, qwen, esm_dir, data, out, *, batch, G, length, engine="random", steps=2, sft_run=None):
    sys.path.insert(0, "BioReason-Pro")
    from train_protein_grpo import main as grpo_main
    run = work / f"grpo_b{batch}_g{G}_l{length}_{engine}"
    shutil.rmtree(run, ignore_errors=True)
    init = ["--init", "sft", "--sft_checkpoint", str(sft_run / "checkpoints/last")] if sft_run else ["--init", "base"]
    argv = ["--config", "BioReason-Pro/configs/grpo_4b.yaml", *init, "--data_path", str(data),
            "--output_dir", str(run), "--text_model_name", str(qwen), "--protein_model_name", str(esm_dir),
            "--num_generations", str(G), "--per_device_train_batch_size", str(batch),
            "--gradient_accumulation_steps", "1", "--steps_per_generation", str(max(1, G // batch) if batch < G else 1),
            "--rollout_batch_size", "0", "--max_completion_length", str(length), "--max_steps", str(steps),
            "--logging_steps", "1", "--save_steps", "1000", "--resume", "never", "--engine", engine,
            "--cache_dir", str(work / "cache")]
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        rc = grpo_main(argv)
        log = read_log(run)
        emit(out, what="grpo", engine=engine, batch=batch, G=G, length=length, fits=rc == 0, rc=rc,
             wall_s=time.perf_counter() - t0, peak_gb=max(e.get("peak_memory_gb", 0) for e in log),
             step_time_s=[e["step_time_s"] for e in log], generation_s=[e["generation_s"] for e in log],
             update_s=[e["update_s"] for e in log])
        return rc == 0
    except torch.OutOfMemoryError as e:
        emit(out, what="grpo", engine=engine, batch=batch, G=G, length=length, fits=False, error=str(e)[:300],
             peak_gb=torch.cuda.max_memory_allocated() / 2**30, wall_s=time.perf_counter() - t0)
        return False
    finally:
        gc.collect()
        torch.cuda.empty_cache()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/fit")
    p.add_argument("--out", required=True)
    p.add_argument("--protein_length", type=int, default=400)
    p.add_argument("--cap_gib", type=float, default=80.0)
    p.add_argument("--deadline_s", type=float, default=480, help="start no fit point after this many seconds")
    p.add_argument("--points", default="", help="only these fit points, 'GxLENGTH,...' (one group per micro-batch)")
    p.add_argument("--skip", default="", help="comma list of parts to skip: esm,sft,real,fit")
    args = p.parse_args()
    skip = set(args.skip.split(","))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from biopost.generate.engine import ENGINES
    ENGINES.register("random", RandomCompletions)
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    emit(args.out, what="device", name=torch.cuda.get_device_name(0), total_gib=total, torch=torch.__version__)
    t0 = time.perf_counter()
    qwen, esm_dir = build_models(work)
    emit(args.out, what="build", seconds=time.perf_counter() - t0)
    data = synth_data(work, args.protein_length)
    for part, fn in (("esm", lambda: esm_checks(esm_dir, args.out)),):
        if part not in skip:
            try:
                fn()
            except Exception:  # noqa: BLE001 - report and go on to the other parts
                emit(args.out, what=part, error=traceback.format_exc()[-1500:])
    sft_run = None
    if "sft" not in skip:
        try:
            sft_run = sft(work, qwen, esm_dir, data, args.out)
        except Exception:  # noqa: BLE001
            emit(args.out, what="sft", error=traceback.format_exc()[-1500:])
    torch.cuda.set_per_process_memory_fraction(min(1.0, args.cap_gib / total))
    emit(args.out, what="cap", cap_gib=args.cap_gib, fraction=args.cap_gib / total)
    if "real" not in skip:   # one real rollout: the hf engine, warm start from the SFT LoRA
        grpo_point(work, qwen, esm_dir, data, args.out, batch=8, G=8, length=128, engine="hf", steps=1,
                   sft_run=sft_run)
    if args.points:   # explicit fit points "GxLENGTH,...", e.g. to find the first failure
        for point in args.points.split(","):
            G, length = (int(x) for x in point.lower().split("x"))
            grpo_point(work, qwen, esm_dir, data, args.out, batch=G, G=G, length=length)
    elif "fit" not in skip:
        # one group (G completions) per micro-batch; per length, G grows until the first failure
        for length in (1024, 2048):
            for G in (8, 16, 24, 32, 48):
                if time.perf_counter() - t0 > args.deadline_s:
                    emit(args.out, what="fit", stopped="deadline", length=length, G=G)
                    return
                if not grpo_point(work, qwen, esm_dir, data, args.out, batch=G, G=G, length=length):
                    break


if __name__ == "__main__":
    main()
