"""Evaluate a checkpoint on the ID / OOD test splits (or the val probes) and write metrics files.

The run's `config.yaml` says which sweep, cell, run id, task and data the checkpoint belongs to
(a standalone checkpoint needs `--data_path` and `--task`). For each split, greedy decoding by
default (sampling as an option) through the shared generation path, answers parsed after
`</think>` / `Answer:`, and `<run dir>/eval/<split>[@<label>]/{predictions.jsonl,metrics.json}`.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from biopost.config import F

SPLIT_TO_DATA = {"id": "id_test", "ood": "ood_test", "id_val": "id_val", "ood_val": "ood_val"}


@dataclass
class EvalConfig:
    run_dir: Optional[str] = F(None, "the stage's run directory (holds config.yaml and checkpoints/)")
    checkpoint: str = F("last", "checkpoint label under <run_dir>/checkpoints (last, best_ood_val) or a path")
    eval_split: str = F("both", "id, ood, both (= id,ood), id_val, ood_val, or a comma list")
    max_examples: int = F(0, "evaluate the first N examples of each split (0 = all)")
    batch_size: int = F(16, "prompts per generation batch")
    max_new_tokens: int = F(512, "generation budget per answer")
    do_sample: bool = F(False, "sample instead of greedy decoding")
    temperature: float = F(1.0, "sampling temperature")
    top_p: float = F(1.0, "nucleus sampling mass")
    top_k: int = F(0, "top-k sampling (0 = off)")
    seed: int = F(0, "sampling seed; also the bootstrap seed")
    engine: str = F("hf", "generation engine; only 'hf' (transformers + KV cache) is available")
    data_path: Optional[str] = F(None, "override the data path recorded in the run's config.yaml")
    task: Optional[str] = F(None, "override the task recorded in the run's config.yaml")
    output_dir: Optional[str] = F(None, "write eval/ here instead of under --run_dir")
    run_id: Optional[str] = F(None, "override the run id")
    device: str = F("auto", "auto, cpu, cuda")
    bf16: bool = F(True, "bf16 on GPU")
    bootstrap_resamples: int = F(1000, "bootstrap resamples for the ci95 intervals")
    system_prompt: Optional[str] = F(None, "override the system prompt recorded in the run's config.yaml")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_splits(text: str) -> list[str]:
    names = []
    for part in text.split(","):
        part = part.strip()
        if part == "both":
            names += ["id", "ood"]
        elif part in SPLIT_TO_DATA:
            names.append(part)
        elif part:
            raise ValueError(f"--eval_split: unknown split {part!r} (use id, ood, both, id_val, ood_val)")
    return list(dict.fromkeys(names))


def resolve_checkpoint(run_dir: Path | None, checkpoint: str) -> tuple[Path, str]:
    """(checkpoint directory, label). A label is looked up under <run_dir>/checkpoints."""
    if run_dir is not None and "/" not in checkpoint and not Path(checkpoint).is_dir():
        path = run_dir / "checkpoints" / checkpoint
        if not path.exists():
            have = sorted(p.name for p in (run_dir / "checkpoints").iterdir()) if (run_dir / "checkpoints").is_dir() else []
            raise FileNotFoundError(f"{run_dir}: no checkpoint {checkpoint!r} (have: {', '.join(have) or 'none'})")
        return path, checkpoint
    path = Path(checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no such directory")
    return path, path.name if path.name in ("last", "best_ood_val") else path.name


def prompt_hash(ids: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]


def evaluate_rows(model, task, rows, caches, cfg, device, autocast_ctx=None, desc="eval", system_prompt=None,
                  timing: dict | None = None):
    """Generate for `rows`; returns (predictions, golds, parsed). `timing`, when given, receives
    the seconds spent generating and the number of tokens generated (what an evaluation costs)."""
    import time

    from tqdm import tqdm

    from biopost.data.examples import encode_prompt
    from biopost.eval.parse import extract_answer
    from biopost.generate import SamplingConfig, generate

    examples = [encode_prompt(model, task, row, 0, system_prompt, fallback_id=f"{desc}[{i}]")
                for i, row in enumerate(rows)]
    for modality, cache in caches.items():
        cache.ensure(sorted({s for ex in examples for m, s in ex.bio if m == modality}))
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
                              temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, seed=cfg.seed)
    predictions, golds, parsed = [], [], []
    bar = tqdm(total=len(examples), desc=desc, unit="ex", mininterval=1.0 if sys.stderr.isatty() else 30.0)
    seconds, n_tokens = 0.0, 0
    for start in range(0, len(examples), cfg.batch_size):
        chunk = examples[start:start + cfg.batch_size]
        t0 = time.perf_counter()
        outs = generate(model, chunk, lambda m, s: caches[m].get(s), sampling, device=device,
                        autocast_ctx=autocast_ctx)
        seconds += time.perf_counter() - t0
        n_tokens += sum(len(o.tokens) for o in outs)
        for ex, out in zip(chunk, outs):
            answer = extract_answer(out.text)
            predictions.append({"id": ex.id, "prompt_hash": prompt_hash(ex.input_ids), "generation": out.text,
                                "parsed": answer, "gold": ex.gold, "truncated": not out.stopped})
            golds.append(ex.gold)
            parsed.append(answer)
        bar.update(len(chunk))
    bar.close()
    if timing is not None:
        timing.update(generate_s=round(seconds, 3), generated_tokens=n_tokens,
                      tokens_per_s=round(n_tokens / seconds, 1) if seconds > 0 else None)
    return predictions, golds, parsed


def score(golds, parsed, bootstrap_resamples: int = 1000, seed: int = 0) -> tuple[dict, dict, dict, list[bool]]:
    """(metrics, ci95, per_class, per-example correctness) for a classification task."""
    from biopost.eval.classification import bootstrap_ci, classification_metrics
    from biopost.eval.parse import normalize_label
    m = classification_metrics(golds, parsed)
    metrics = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    ci95 = {k: bootstrap_ci(golds, parsed, metric=k, n_resamples=bootstrap_resamples, seed=seed)
            for k in ("accuracy", "macro_f1")} if bootstrap_resamples > 0 else {}
    correct = [p is not None and normalize_label(p) == normalize_label(g) for g, p in zip(golds, parsed)]
    return metrics, ci95, m["per_class"], correct


def run_eval(cfg: EvalConfig) -> int:
    from biopost.config import load_run_config
    from biopost.data.examples import load_task_data
    from biopost.data.schema import Truncation
    from biopost.encoders.cache import EmbeddingCache
    from biopost.eval.classification import majority_rate
    from biopost.eval.metrics_file import eval_dir, provenance, write_eval_outputs
    from biopost.model.bio_model import BioReasoningModel
    from biopost.tasks import get_task
    from biopost.train.device import autocast, base_dtype, pick_device

    if cfg.engine != "hf":
        raise ValueError(f"--engine {cfg.engine}: only 'hf' is available (a vLLM engine is not implemented yet)")
    splits = parse_splits(cfg.eval_split)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else None
    ckpt, label = resolve_checkpoint(run_dir, cfg.checkpoint)
    if run_dir is None and (ckpt.parent.parent / "config.yaml").is_file():
        run_dir = ckpt.parent.parent  # a checkpoint path inside a run directory
    run_cfg = load_run_config(run_dir) if run_dir is not None and (run_dir / "config.yaml").is_file() else {}
    task_name = cfg.task or run_cfg.get("task")
    data_path = cfg.data_path or run_cfg.get("data_path")
    if not task_name or not data_path:
        raise ValueError("no run config.yaml to read the task and data from: pass --task and --data_path")
    task = get_task(task_name)
    out_root = Path(cfg.output_dir) if cfg.output_dir else (run_dir or ckpt.parent)
    run_id = cfg.run_id or run_cfg.get("run_id") or out_root.resolve().name
    system_prompt = cfg.system_prompt if cfg.system_prompt is not None else (run_cfg.get("system_prompt") or None)

    truncation = {"dna": Truncation(int(run_cfg.get("max_length_dna", 0) or 0),
                                    int(run_cfg.get("truncate_dna_per_side", 0) or 0))}
    rows, _ = load_task_data(task, data_path, tuple(SPLIT_TO_DATA[s] for s in splits), training_splits=(),
                             truncation=truncation, skip_invalid=bool(run_cfg.get("skip_invalid", False)), log=log)
    device = pick_device(cfg.device)
    model = BioReasoningModel.load(ckpt, device=device, dtype=base_dtype(device, cfg.bf16)).eval()
    caches = {m: EmbeddingCache(enc, run_cfg.get("cache_dir")) for m, enc in model.encoders.items()}
    prov = provenance(config_path=(run_dir / "config.yaml") if run_dir else None,
                      data_paths=_data_files(data_path), device=str(device))
    for split in splits:
        split_rows = rows[SPLIT_TO_DATA[split]]
        if cfg.max_examples > 0:
            split_rows = split_rows[:cfg.max_examples]
        timing: dict = {}
        preds, golds, parsed = evaluate_rows(model, task, split_rows, caches, cfg, device,
                                             autocast_ctx=autocast(device, cfg.bf16), desc=f"eval {split}",
                                             system_prompt=system_prompt, timing=timing)
        metrics, ci95, per_class, correct = score(golds, parsed, cfg.bootstrap_resamples, cfg.seed)
        for p, c in zip(preds, correct):
            p["correct"] = c
        record = {
            "schema": "biopost.metrics/v1", "run_id": run_id, "sweep": run_cfg.get("sweep"),
            "cell": run_cfg.get("cell") or {}, "stage": run_cfg.get("stage", "unknown"), "checkpoint": label,
            "modality": task.modality, "task": task.name, "split": split, "headline": task.headline,
            "n": len(golds), "n_unparsed": sum(p is None for p in parsed), "metrics": metrics, "ci95": ci95,
            "per_class": per_class, "majority_rate": majority_rate(golds), "seed": run_cfg.get("seed", cfg.seed),
            "computed": "accuracy and macro-F1 over the gold label set (one-vs-rest) of exact matches of the "
                        "normalized answer parsed after </think> / Answer:; unparsed answers count as wrong; "
                        f"ci95: percentile bootstrap over examples ({cfg.bootstrap_resamples} resamples)",
            "decoding": {"engine": cfg.engine, "do_sample": cfg.do_sample, "temperature": cfg.temperature,
                         "top_p": cfg.top_p, "top_k": cfg.top_k, "max_new_tokens": cfg.max_new_tokens},
            "n_truncated": sum(p["truncated"] for p in preds),
            "timing": {**timing, "batch_size": cfg.batch_size},
            "checkpoint_path": str(ckpt.resolve()),
            "provenance": prov,
        }
        out = write_eval_outputs(eval_dir(out_root, split, label), record, preds)
        interval = "-".join(f"{v:.3f}" for v in ci95.get("accuracy", []))
        log(f"[eval] {split}: accuracy {metrics['accuracy']:.3f} (95% CI {interval or 'off'}), "
            f"macro-F1 {metrics['macro_f1']:.3f}, n={len(golds)}, unparsed {record['n_unparsed']}, "
            f"{timing['generated_tokens']} tokens generated in {timing['generate_s']:.1f} s -> {out}")
    return 0


def _data_files(data_path: str) -> list[Path]:
    path = Path(data_path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file())
    return [path] if path.is_file() else []


def main(argv=None, prog: str | None = None) -> int:
    from biopost.config import parse_config
    from biopost.train.sft import run_stage
    cfg = parse_config(EvalConfig, argv, prog=prog, description=__doc__.split("\n\n")[0])
    return run_stage(run_eval, cfg)
