"""Evo2 encoder speed and memory: an evo2_1b_base-shaped StripedHyena (random weights, built from
evo2's own config by bioreason.evo2_encoder, exactly as the backend builds a real checkpoint),
2 kb DNA sequences, batch 1 and 8, float32 outside autocast as the backend runs it, embeddings
from blocks.20.mlp.l3. Random weights: the figures are about speed and memory, not quality.

Also measured in the same run:
  - batch vs alone: a batch of 8 different lengths (2,000 down to 250 nt), right-padded, against
    encoding each sequence alone (max abs diff; the backend's contract is <= 1e-5 in fp32);
  - the full forward (all 25 blocks and the logits, what the published code ran per sequence)
    against the backend's forward, which stops after the embedding layer.

GPU machine (CUDA, Python 3.12, torch 2.11, triton; no flash-attn, no Transformer Engine): the
evo2 / vtx packages travel as wheels. Here, from the repo root, once:
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl/evo2 evo2==0.6.0 vtx==1.1.0 biopython==1.88
(einops, rich, tqdm, huggingface_hub, pyyaml are in the GPU image.) There, carrying .whl/evo2:
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/evo2/*.whl \
      && PYTHONPATH=/tmp/site:.:BioReason python3 bench/bench_evo2.py --out $OUT/bench_evo2.json

CPU check (tiny model, seconds):  python bench/bench_evo2.py --tiny
Prints one JSON object (and writes it to --out).
"""
import argparse
import json
import platform
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "BioReason")]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_dna(n: int, length: int, rng: random.Random) -> list[str]:
    return ["".join(rng.choice("ACGT") for _ in range(length)) for _ in range(n)]


def time_encode(encoder, batches, device) -> list[float]:
    times = []
    for batch in batches:
        sync(device)
        t = time.perf_counter()
        encoder.encode(batch)
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a tiny model on the CPU (checks the script, not a figure)")
    p.add_argument("--model", default="evo2_1b_base", help="evo2 config to build (random weights)")
    p.add_argument("--layer", default=None, help="embedding layer (default blocks.20.mlp.l3; tiny: blocks.2.mlp.l3)")
    p.add_argument("--length", type=int, default=2000, help="nucleotides per sequence")
    p.add_argument("--batch_sizes", default="1,8")
    p.add_argument("--repeats", type=int, default=5, help="timed batches per batch size (after one warm-up)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (the backend's default is full fp32)")
    p.add_argument("--device", default=None)
    p.add_argument("--out")
    args = p.parse_args()

    from bioreason import evo2_compat
    from bioreason import evo2_encoder as E

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    length = min(args.length, 500) if args.tiny else args.length
    repeats = min(args.repeats, 2) if args.tiny else args.repeats
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.tiny:
            import tempfile  # through a checkpoint on disk, as a real model loads
            ckpt = E.Checkpoint(E.tiny_config(device), "tiny", None, None)
            model, _ = E.make_model(ckpt, device)
            E.random_init_(model, 0)
            with tempfile.TemporaryDirectory(prefix="tiny-evo2-") as tmp:
                where = E.save_checkpoint(model, tmp, ckpt.config, "tiny_evo2")
                encoder = E.Evo2Encoder(str(where), layer=args.layer or "blocks.2.mlp.l3", device=device,
                                        batch_size=max(batch_sizes))
        else:
            encoder = E.Evo2Encoder(args.model, layer=args.layer, device=device, batch_size=max(batch_sizes),
                                    random_weights=True)
    build_s = time.perf_counter() - t0
    cfg = encoder.config
    n_params = sum(p.numel() for p in encoder.model.parameters())

    rng = random.Random(0)
    result = {
        "model": "tiny (evo2_1b_base config, tiny dims)" if args.tiny else f"{args.model}-shaped, random weights",
        "layer": encoder.layer, "hidden_size": encoder.hidden_size, "parameters": n_params,
        "layers": {k: len(cfg[k]) for k in ("hcs_layer_idxs", "hcm_layer_idxs", "hcl_layer_idxs", "attn_layer_idxs")},
        "precision": encoder.precision, "tf32": bool(args.tf32),
        "attention": ("flash-attn" if cfg.get("use_flash_attn")
                      else "PyTorch scaled_dot_product_attention (vtx SelfAttention)"),
        "fp8_input_projections": bool(cfg.get("use_fp8_input_projections")),
        "shims": dict(evo2_compat.INSTALLED),
        "warnings": sorted({str(w.message)[:240] for w in caught}),
        "build_s": round(build_s, 2), "length_nt": length,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "python": platform.python_version(),
        "evo2": E._evo2_version(), "runs": [],
    }
    for b in batch_sizes:
        seqs = random_dna(b * (repeats + 1), length, rng)
        batches = [seqs[i:i + b] for i in range(0, len(seqs), b)]
        encoder.batch_size = b
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        time_encode(encoder, batches[:1], device)                     # warm-up (cuFFT plans, allocator)
        times = time_encode(encoder, batches[1:], device)
        med = statistics.median(times)
        result["runs"].append({
            "batch": b, "s_per_batch_median": round(med, 4), "s_per_batch_all": [round(t, 4) for t in times],
            "sequences_per_s": round(b / med, 2), "embeddings_per_s": round(b * length / med, 1),
            "peak_gpu_memory_gb": (round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
                                   if device.type == "cuda" else None),
        })

    # right padding: a batch of different lengths equals encoding each sequence alone
    lengths = [max(1, length * k // 8) for k in range(8, 0, -1)]
    mixed = [random_dna(1, n, rng)[0] for n in lengths]
    encoder.batch_size = len(mixed)
    together = encoder.encode(mixed)
    alone = [encoder.encode([s])[0] for s in mixed]
    result["batch_vs_alone"] = {
        "lengths": lengths,
        "max_abs_diff": max((a - b).abs().max().item() for a, b in zip(together, alone)),
        "max_abs_embedding": max(a.abs().max().item() for a in alone),
        "all_finite": all(bool(torch.isfinite(a).all()) for a in together),
    }

    # the full forward (every block and the logits), batch 1, against the backend's early stop
    x = torch.tensor([list(random_dna(1, length, rng)[0].encode())], device=device)
    with torch.no_grad(), torch.autocast(device.type, enabled=False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder.model(x)
        full = []
        for _ in range(repeats):
            sync(device)
            t = time.perf_counter()
            encoder.model(x)
            sync(device)
            full.append(time.perf_counter() - t)
    result["full_forward_batch1_s_median"] = round(statistics.median(full), 4)

    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
