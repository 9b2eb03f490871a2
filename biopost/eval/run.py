"""Evaluate a checkpoint on the ID / OOD test splits (or the val probes) and write metrics files.

The run's `config.yaml` says which sweep, cell, run id, task and data the checkpoint belongs to
(a standalone checkpoint needs `--data_path` and `--task`). For each split, greedy decoding by
default (sampling as an option) through the shared generation path, answers parsed after
`</think>` / `Answer:`, and `<run dir>/eval/<split>[@<label>]/{predictions.jsonl,metrics.json}`.

Preemption: the finished predictions are written (atomically) after every generation batch, with
a `partial.json` beside them saying which checkpoint and decoding settings produced them, and no
metrics.json. SIGTERM / SIGUSR1 (SLURM's time-limit warning) stops after the batch in progress and
exits 75 (requeue); the rerun generates only the remaining rows (batches are seeded alike, so the
result equals an uninterrupted run, sampled decoding included) and then writes metrics.json.

Several ranks (torchrun, `python -m biopost.launch`): rank r of W evaluates rows r, r+W, ... of each
split and keeps its partial predictions in `<split dir>/shards/rank<r>-of-<W>/`; rank 0 gathers
them back into the rows' order, computes the metrics once and writes the same files as one process
(greedy decoding: the same predictions; sampled decoding seeds every batch alike, so its samples
depend on which rows share a batch and differ from one process's). A signal on any rank requeues
them all; the rerun under the same W resumes every shard, under another W it starts the split over.
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from biopost.config import F
from biopost.errors import BadSplitError, MissingCheckpointError
from biopost.stage import run_stage

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
    num_samples: int = F(1, "answers sampled per example; k >= 2 implies sampling and needs a task with scored "
                            "metrics (go: each term scored by its frequency over the k answers -> Fmax)")
    engine: str = F("auto", "generation engine: auto (static on CUDA, hf on CPU), static (static KV cache, CUDA graphs) or hf (transformers + KV cache, the reference)")
    data_path: Optional[str] = F(None, "override the data path recorded in the run's config.yaml")
    task: Optional[str] = F(None, "override the task recorded in the run's config.yaml")
    output_dir: Optional[str] = F(None, "write eval/ here instead of under --run_dir")
    run_id: Optional[str] = F(None, "override the run id")
    device: str = F("auto", "auto, cpu, cuda")
    bf16: bool = F(True, "bf16 on GPU")
    bootstrap_resamples: int = F(1000, "bootstrap resamples for the ci95 intervals")
    system_prompt: Optional[str] = F(None, "override the system prompt recorded in the run's config.yaml")
    trust_remote_code: bool = F(False, "allow a checkpoint whose models ship their own code (only one you trust)")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def validate_config(cfg: EvalConfig) -> None:
    """Counts that must be positive, checked before a model loads."""
    from biopost.config import ConfigError
    problems = [f"{name} must be >= {low}, got {getattr(cfg, name)}"
                for name, low in (("batch_size", 1), ("max_new_tokens", 1), ("max_examples", 0),
                                  ("bootstrap_resamples", 0))
                if getattr(cfg, name) < low]
    if cfg.temperature <= 0:
        problems.append(f"temperature must be > 0, got {cfg.temperature}")
    if not 0 < cfg.top_p <= 1:
        problems.append(f"top_p must be in (0, 1], got {cfg.top_p}")
    if problems:
        raise ConfigError("; ".join(problems))


def parse_splits(text: str) -> list[str]:
    names = []
    for part in text.split(","):
        part = part.strip()
        if part == "both":
            names += ["id", "ood"]
        elif part in SPLIT_TO_DATA:
            names.append(part)
        elif part:
            raise BadSplitError(f"--eval_split: unknown split {part!r} (use id, ood, both, id_val, ood_val)")
    return list(dict.fromkeys(names))


def resolve_checkpoint(run_dir: Path | None, checkpoint: str) -> tuple[Path, str]:
    """(checkpoint directory, label). A label is looked up under <run_dir>/checkpoints."""
    if run_dir is not None and "/" not in checkpoint and not Path(checkpoint).is_dir():
        path = run_dir / "checkpoints" / checkpoint
        if not path.exists():
            have = sorted(p.name for p in (run_dir / "checkpoints").iterdir()) if (run_dir / "checkpoints").is_dir() else []
            raise MissingCheckpointError(f"{run_dir}: no checkpoint {checkpoint!r} (have: {', '.join(have) or 'none'})")
        return path, checkpoint
    path = Path(checkpoint)
    if not path.is_dir():
        raise MissingCheckpointError(f"--checkpoint {checkpoint}: no such directory")
    return path, path.name if path.name in ("last", "best_ood_val") else path.name


def prompt_hash(ids: list[int]) -> str:
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()[:16]


def evaluate_rows(engine, model, task, rows, caches, cfg, desc="eval", system_prompt=None,
                  timing: dict | None = None, done: list | None = None, on_batch=None, stop=None):
    """Generate for `rows` through `engine`; returns (predictions, golds, parsed). `timing`, when
    given, receives the seconds spent generating and the number of tokens generated (what an
    evaluation costs). `done`: predictions of the first rows from an interrupted run (not generated
    again); `on_batch(predictions)` runs after every batch; a truthy `stop` ends the loop after the
    batch in progress (the caller sees fewer predictions than rows)."""
    import time

    from tqdm import tqdm

    from biopost.data.examples import encode_prompt
    from biopost.generate import SamplingConfig

    examples = [encode_prompt(model, task, row, 0, system_prompt, fallback_id=f"{desc}[{i}]")
                for i, row in enumerate(rows)]
    for modality, cache in caches.items():
        cache.ensure(sorted({s for ex in examples for m, s in ex.bio if m == modality}))
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample,
                              temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, seed=cfg.seed)
    k = int(getattr(cfg, "num_samples", 1) or 1)
    if k > 1:  # k seeded samples per example (sample j: seed + j), scored by the task
        from dataclasses import replace
        sample_cfgs = [replace(sampling, do_sample=True, seed=cfg.seed + j) for j in range(k)]
    predictions = list(done or [])
    golds = [p["gold"] for p in predictions]
    parsed = [p["parsed"] for p in predictions]
    bar = tqdm(total=len(examples), initial=len(predictions), desc=desc, unit="ex",
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    seconds, n_tokens = 0.0, 0
    for start in range(len(predictions), len(examples), cfg.batch_size):
        if stop:
            break
        chunk = examples[start:start + cfg.batch_size]
        t0 = time.perf_counter()
        if k > 1:
            runs = [engine.generate(chunk, sc) for sc in sample_cfgs]
            seconds += time.perf_counter() - t0
            n_tokens += sum(len(o.tokens) for outs in runs for o in outs)
            for i, ex in enumerate(chunk):
                outs = [r[i] for r in runs]
                each = [task.parse(o.text) for o in outs]
                answer = task.score_samples(each)
                predictions.append({"id": ex.id, "prompt_hash": prompt_hash(ex.input_ids), "generation": outs[0].text,
                                    "samples": [o.text for o in outs], "parsed_samples": each,
                                    "parsed": answer, "gold": ex.gold, "truncated": not all(o.stopped for o in outs)})
                golds.append(ex.gold)
                parsed.append(answer)
        else:
            outs = engine.generate(chunk, sampling)
            seconds += time.perf_counter() - t0
            n_tokens += sum(len(o.tokens) for o in outs)
            for ex, out in zip(chunk, outs):
                answer = task.parse(out.text)
                predictions.append({"id": ex.id, "prompt_hash": prompt_hash(ex.input_ids), "generation": out.text,
                                    "parsed": answer, "gold": ex.gold, "truncated": not out.stopped})
                golds.append(ex.gold)
                parsed.append(answer)
        bar.update(len(chunk))
        if on_batch is not None:
            on_batch(predictions)
    bar.close()
    if timing is not None:
        timing.update(generate_s=round(seconds, 3), generated_tokens=n_tokens,
                      tokens_per_s=round(n_tokens / seconds, 1) if seconds > 0 else None)
    return predictions, golds, parsed


PARTIAL_STATE = "partial.json"


def _partial_identity(cfg, ckpt: Path, split: str) -> dict:
    """What must be equal for an interrupted evaluation's predictions to be reused."""
    identity = {"checkpoint_path": str(ckpt.resolve()), "split": split, "batch_size": cfg.batch_size,
                "max_examples": cfg.max_examples, "seed": cfg.seed, "engine": cfg.engine,
                "decoding": {"do_sample": cfg.do_sample, "temperature": cfg.temperature, "top_p": cfg.top_p,
                             "top_k": cfg.top_k, "max_new_tokens": cfg.max_new_tokens}}
    if cfg.num_samples > 1:
        identity["num_samples"] = cfg.num_samples
    return identity


def _resumable(out_dir: Path, identity: dict, model, task, rows, system_prompt) -> list[dict]:
    """Predictions an interrupted run of the same evaluation left in `out_dir`, or []."""
    import json

    from biopost.data.examples import encode_prompt
    from biopost.eval.metrics_file import PREDICTIONS_FILE, MetricsFileError, read_predictions
    state_path, pred_path = out_dir / PARTIAL_STATE, out_dir / PREDICTIONS_FILE
    if not (state_path.is_file() and pred_path.is_file()):
        return []
    try:
        state = json.loads(state_path.read_text())
        done = read_predictions(pred_path)
    except (OSError, ValueError, MetricsFileError) as e:
        log(f"[eval] ignoring the partial evaluation in {out_dir} ({e}); starting over")
        return []
    if state.get("identity") != identity or len(done) > len(rows):
        log(f"[eval] the partial evaluation in {out_dir} came from other settings; starting over")
        return []
    for i, (pred, row) in enumerate(zip(done, rows)):
        ex = encode_prompt(model, task, row, 0, system_prompt, fallback_id=f"check[{i}]")
        if pred.get("id") != ex.id or pred.get("prompt_hash") != prompt_hash(ex.input_ids):
            log(f"[eval] the partial evaluation in {out_dir} is of other examples; starting over")
            return []
    return done


def _write_partial(out_dir: Path, identity: dict, predictions: list[dict]) -> None:
    """The finished predictions so far, atomically; no metrics.json until the split is complete."""
    import json

    from biopost.eval.metrics_file import METRICS_FILE, PREDICTIONS_FILE
    from biopost.files import ensure_dir, write_json_atomic, write_text_atomic
    ensure_dir(out_dir)
    (out_dir / METRICS_FILE).unlink(missing_ok=True)
    write_text_atomic(out_dir / PREDICTIONS_FILE,
                      "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))
    write_json_atomic(out_dir / PARTIAL_STATE, {"identity": identity, "n_done": len(predictions)})


def cache_lookup(caches: dict):
    """The embedding lookup engines take: (modality, sequence) -> Tensor[L, d]."""
    return lambda modality, sequence: caches[modality].get(sequence)


def run_eval(cfg: EvalConfig) -> int:
    from biopost import distributed
    try:
        return _run_eval(cfg)
    finally:
        distributed.teardown()


def _shard_dir(out_dir: Path, rank) -> Path:
    """Where rank r of W keeps its partial predictions (W > 1); one process uses out_dir itself."""
    return out_dir if rank.world == 1 else out_dir / "shards" / f"rank{rank.rank}-of-{rank.world}"


def _interleave(shards: list[list]) -> list:
    """Rank r evaluated rows r, r+W, ...: back to the rows' order."""
    out = []
    for i in range(max(len(s) for s in shards)):
        out += [s[i] for s in shards if i < len(s)]
    return out


def _run_eval(cfg: EvalConfig) -> int:
    import shutil

    from biopost import distributed
    from biopost.config import ConfigError, load_run_config
    from biopost.data.examples import load_task_data, truncation_for
    from biopost.encoders.cache import EmbeddingCache
    from biopost.eval.metrics_file import eval_dir, provenance, write_eval_outputs
    from biopost.generate.engine import ENGINES, build_engine
    from biopost.model.bio_model import BioReasoningModel
    from biopost.signals import REQUEUE_EXIT_CODE, StopFlag
    from biopost.tasks import get_task
    from biopost.runtime import autocast, base_dtype, pick_device

    ENGINES.get(cfg.engine)  # an unknown engine fails before anything loads
    validate_config(cfg)
    stop = StopFlag()  # SLURM's USR1 / SIGTERM: finish the batch, keep the predictions, requeue
    splits = parse_splits(cfg.eval_split)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else None
    ckpt, label = resolve_checkpoint(run_dir, cfg.checkpoint)
    if run_dir is None and (ckpt.parent.parent / "config.yaml").is_file():
        run_dir = ckpt.parent.parent  # a checkpoint path inside a run directory
    run_cfg = load_run_config(run_dir) if run_dir is not None and (run_dir / "config.yaml").is_file() else {}
    task_name = cfg.task or run_cfg.get("task")
    data_path = cfg.data_path or run_cfg.get("data_path")
    if not task_name or not data_path:
        raise ConfigError("no run config.yaml to read the task and data from: pass --task and --data_path")
    task = get_task(task_name)
    scored = cfg.num_samples > 1
    if cfg.num_samples < 1:
        raise ConfigError(f"--num_samples must be >= 1, got {cfg.num_samples}")
    if scored and (task.score_samples is None or task.scored_metrics is None):
        raise ConfigError(f"--num_samples {cfg.num_samples}: task {task.name!r} has no scored metrics "
                          f"(use --num_samples 1, or --do_sample true for sampled answers)")
    out_root = Path(cfg.output_dir) if cfg.output_dir else (run_dir or ckpt.parent)
    run_id = cfg.run_id or run_cfg.get("run_id") or out_root.resolve().name
    system_prompt = cfg.system_prompt if cfg.system_prompt is not None else (run_cfg.get("system_prompt") or None)

    # the run's own truncation (its modality's flags in config.yaml; absent ones mean no limit)
    truncation = truncation_for(task.modality, _with_defaults_off(run_cfg, task.modality))
    rows, _ = load_task_data(task, data_path, tuple(SPLIT_TO_DATA[s] for s in splits), training_splits=(),
                             truncation=truncation, skip_invalid=bool(run_cfg.get("skip_invalid", False)), log=log)
    device = pick_device(cfg.device)
    rank = distributed.init(device)   # several ranks: each evaluates rows r, r+W, ...; rank 0 merges
    model = BioReasoningModel.load(ckpt, device=device, dtype=base_dtype(device, cfg.bf16),
                                   trust_remote_code=cfg.trust_remote_code).eval()
    caches = {m: EmbeddingCache(enc, run_cfg.get("cache_dir")) for m, enc in model.encoders.items()}
    engine = build_engine(cfg.engine, model, cache_lookup(caches), device=device,
                          autocast_ctx=lambda: autocast(device, cfg.bf16))
    prov = provenance(config_path=(run_dir / "config.yaml") if run_dir else None,
                      data_paths=_data_files(data_path), device=str(device))
    for split in splits:
        split_rows = rows[SPLIT_TO_DATA[split]]
        if cfg.max_examples > 0:
            split_rows = split_rows[:cfg.max_examples]
        timing: dict = {}
        out_dir = eval_dir(out_root, split, label)
        identity = _partial_identity(cfg, ckpt, split)
        mine, part_dir = split_rows[rank.rank::rank.world], _shard_dir(out_dir, rank)
        if rank.world > 1:
            identity["shard"] = [rank.rank, rank.world]
        done = _resumable(part_dir, identity, model, task, mine, system_prompt)
        if done:
            log(f"[eval] {split}: resuming after {len(done)} of {len(mine)} finished predictions")
        preds, golds, parsed = evaluate_rows(engine, model, task, mine, caches, cfg, desc=f"eval {split}",
                                             system_prompt=system_prompt, timing=timing, done=done,
                                             on_batch=lambda p: _write_partial(part_dir, identity, p), stop=stop)
        if distributed.any_rank(len(preds) < len(mine)):   # every rank requeues if one was stopped
            log(f"[eval] received signal {stop.requested}: kept {len(preds)} of {len(mine)} {split} "
                f"predictions in {part_dir}, exiting with {REQUEUE_EXIT_CODE} (requeue)")
            stop.restore()
            return REQUEUE_EXIT_CODE
        if rank.world > 1:
            shards = distributed.gather_to_main((preds, timing))
            if not rank.is_main:
                continue
            preds = _interleave([p for p, _ in shards])
            golds, parsed = [p["gold"] for p in preds], [p["parsed"] for p in preds]
            timing = {"generate_s": max(t["generate_s"] for _, t in shards),   # the ranks ran side by side
                      "generated_tokens": sum(t["generated_tokens"] for _, t in shards), "ranks": rank.world}
            timing["tokens_per_s"] = round(timing["generated_tokens"] / timing["generate_s"], 1) \
                if timing["generate_s"] > 0 else None
        metric_fn = task.scored_metrics if scored else task.metrics
        result = metric_fn(golds, parsed, bootstrap_resamples=cfg.bootstrap_resamples, seed=cfg.seed)
        head = task.scored_headline if scored else task.headline
        for p, c in zip(preds, result.per_example):
            p[task.prediction_field] = bool(c) if task.prediction_field == "correct" else c
        metrics, ci95 = result.metrics, result.ci95
        record = {
            "schema": "biopost.metrics/v1", "run_id": run_id, "sweep": run_cfg.get("sweep"),
            "cell": run_cfg.get("cell") or {}, "stage": run_cfg.get("stage", "unknown"), "checkpoint": label,
            "modality": task.modality, "task": task.name, "split": split, "headline": head,
            "n": len(golds), "n_unparsed": sum(p is None for p in parsed), "metrics": metrics, "ci95": ci95,
            **result.extra, "seed": run_cfg.get("seed", cfg.seed), "computed": result.computed,
            "decoding": {"engine": cfg.engine, "do_sample": cfg.do_sample or scored, "temperature": cfg.temperature,
                         "top_p": cfg.top_p, "top_k": cfg.top_k, "max_new_tokens": cfg.max_new_tokens,
                         **({"num_samples": cfg.num_samples} if scored else {})},
            "n_truncated": sum(p["truncated"] for p in preds),
            "timing": {**timing, "batch_size": cfg.batch_size},
            "checkpoint_path": str(ckpt.resolve()),
            "provenance": prov,
        }
        out = write_eval_outputs(out_dir, record, preds)
        (out_dir / PARTIAL_STATE).unlink(missing_ok=True)
        shutil.rmtree(out_dir / "shards", ignore_errors=True)
        interval = "-".join(f"{v:.3f}" for v in ci95.get(head, []))
        others = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != head and isinstance(v, float))
        log(f"[eval] {split}: {head} {metrics[head]:.3f} (95% CI {interval or 'off'})"
            f"{', ' + others if others else ''}, n={len(golds)}, unparsed {record['n_unparsed']}, "
            f"{timing['generated_tokens']} tokens generated in {timing['generate_s']:.1f} s -> {out}")
    distributed.barrier()   # the metrics files exist before any rank reports success
    stop.restore()
    return 0


def _with_defaults_off(run_cfg: dict, modality_name: str) -> dict:
    """A run config where the modality's truncation flags that it does not record read as 0 (off):
    a standalone checkpoint evaluated without a config.yaml is not cropped by a default it never saw."""
    from biopost.modality import get_modality
    out = dict(run_cfg)
    for f in get_modality(modality_name).flags:
        if f.name not in out and isinstance(f.default, int) and not isinstance(f.default, bool):
            out[f.name] = 0
    return out


def _data_files(data_path: str) -> list[Path]:
    path = Path(data_path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file())
    return [path] if path.is_file() else []


def main(argv=None, prog: str | None = None) -> int:
    from biopost.config import parse_config
    cfg = parse_config(EvalConfig, argv, prog=prog, description=__doc__.split("\n\n")[0])
    return run_stage(run_eval, cfg)
