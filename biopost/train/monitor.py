"""Over-specialization monitor for SFT: ID-val and OOD-val probe curves during training.

Every `--eval_every` optimizer steps the model answers fixed probe subsets of `id_val` and
`ood_val` (never the test splits) through the same generation and metrics code as evaluation.
Both curves go to train_log.jsonl. The checkpoint with the best OOD-val headline is kept as
`checkpoints/best_ood_val`; `--stop_on_ood_peak K` stops once OOD-val has not improved for K
evaluations. The monitor's state is part of every checkpoint, so resuming keeps the count.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from biopost.data.schema import fraction_subset


@dataclass
class EvalSettings:
    max_new_tokens: int
    batch_size: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0


@dataclass
class ProbeMonitor:
    model: object
    task: object
    probes: dict                      # split -> rows
    caches: dict
    settings: EvalSettings
    patience: int
    device: object
    log: object
    engine: object = None             # the generation engine probes sample through
    best: float | None = None
    best_step: int | None = None
    since_best: int = 0
    history: list = field(default_factory=list)

    @classmethod
    def create(cls, cfg, model, task, rows, caches, out_dir, state: dict, log, engine=None):
        probes = {}
        for split in ("id_val", "ood_val"):
            subset = rows[split]
            if cfg.probe_size and len(subset) > cfg.probe_size:
                subset = fraction_subset(subset, cfg.probe_size / len(subset), cfg.data_seed)[:cfg.probe_size]
            probes[split] = subset
        monitor = cls(model=model, task=task, probes=probes, caches=caches,
                      settings=EvalSettings(cfg.max_new_tokens, cfg.eval_batch_size, seed=cfg.seed),
                      patience=cfg.stop_on_ood_peak, device=next(model.parameters()).device, log=log,
                      engine=engine)
        if monitor.engine is None:
            from biopost.eval.run import cache_lookup
            from biopost.generate.engine import build_engine
            monitor.engine = build_engine(getattr(cfg, "engine", "auto"), model, cache_lookup(caches),
                                          device=monitor.device)
        monitor.best = state.get("best")
        monitor.best_step = state.get("best_step")
        monitor.since_best = state.get("since_best", 0)
        monitor.history = state.get("history", [])
        log(f"[monitor] probes: id_val {len(probes['id_val'])}, ood_val {len(probes['ood_val'])} examples")
        return monitor

    def state(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "since_best": self.since_best,
                "history": self.history}

    def score_split(self, split: str) -> dict:
        """The headline (and other metrics) of one probe split; tests may script this."""
        from biopost.eval.run import evaluate_rows
        self.model.eval()
        self.engine.sync_weights(self.model)  # the policy moved since the last probe
        _, golds, parsed = evaluate_rows(self.engine, self.model, self.task, self.probes[split], self.caches,
                                         self.settings, desc=f"probe {split}")
        metrics = dict(self.task.metrics(golds, parsed, bootstrap_resamples=0).metrics)
        metrics["n_unparsed"] = sum(p is None for p in parsed)
        return metrics

    def evaluate(self, step: int, train_log) -> tuple[bool, bool]:
        """Score both probes at `step`. Returns (improved, stop)."""
        headline = self.task.headline
        entry = {"event": "probe", "step": step}
        for split in ("id_val", "ood_val"):
            for key, value in self.score_split(split).items():
                entry[f"{split}_{key}"] = value
        ood = entry[f"ood_val_{headline}"]
        improved = self.best is None or ood > self.best
        if improved:
            self.best, self.best_step, self.since_best = ood, step, 0
        else:
            self.since_best += 1
        entry.update(best_ood_val=self.best, best_step=self.best_step, evals_since_best=self.since_best)
        self.history.append({"step": step, "id_val": entry[f"id_val_{headline}"], "ood_val": ood})
        train_log.write(**entry)
        self.log(f"[monitor] step {step}: id_val {entry[f'id_val_{headline}']:.3f}, ood_val {ood:.3f}"
                 f" (best {self.best:.3f} at step {self.best_step})")
        stop = self.patience > 0 and self.since_best >= self.patience
        return improved, stop
