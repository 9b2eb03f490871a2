"""From validated rows to model inputs: shared by SFT, GRPO and evaluation.

`load_task_data` reads and validates the splits a stage needs; `encode_training_example`
and `encode_prompt` turn a row into token ids (with labels for training); `collate` pads a
batch and gathers the cached encoder outputs for its bio items; `collate_packed` lays training
examples back to back in one row instead (SFT's --tokens_per_micro_batch).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from biopost.data.chat import IGNORE_INDEX, encode, render
from biopost.data.io import DataError, load_split_rows
from biopost.data.schema import Truncation, ValidationReport, validate_rows


def load_task_data(task, data_path: str, splits: tuple[str, ...], *, training_splits=("train",),
                   truncation: dict | None = None, skip_invalid: bool = False,
                   log=print) -> tuple[dict[str, list[dict]], dict[str, ValidationReport]]:
    """Validated rows per split; training splits need the SFT fields (reasoning)."""
    if not data_path:
        raise DataError("no data: set --data_path (a directory of split files, a file, or a HF dataset name)")
    raw = load_split_rows(data_path, tuple(splits))
    rows, reports = {}, {}
    for split in splits:
        schema = task.train_schema if split in training_splits else task.schema
        rows[split], reports[split] = validate_rows(raw[split], schema, split, truncation, skip_invalid)
        if task.check_row is not None:
            rows[split] = _task_checks(task, rows[split], reports[split], skip_invalid)
        if not rows[split]:
            raise DataError(f"{data_path}: split {split!r} has no valid rows ({reports[split].summary()})")
        log(f"[data] {reports[split].summary()}")
        for err in reports[split].first_errors:
            log(f"[data]   e.g. {err}")
    return rows, reports


def _task_checks(task, rows: list[dict], report: ValidationReport, skip_invalid: bool) -> list[dict]:
    """The task's own row checks (after the generic ones), with the same error / skip-and-count rules."""
    kept = []
    for row in rows:
        try:
            kept.append(task.check_row(row))
        except DataError as e:
            where = row.get("_source", "?")
            message = f"{where}: {e}" if not str(e).startswith(where) else str(e)
            if not skip_invalid:
                raise DataError(f"{message} (set --skip_invalid true to skip and count such rows)") from None
            report.skipped[str(e).split(": ", 1)[-1][:120]] += 1
            if len(report.first_errors) < 5:
                report.first_errors.append(message)
    report.n_valid = len(kept)
    return kept


def truncation_for(modality_name: str, cfg) -> dict[str, Truncation]:
    """{modality: Truncation} from a stage config (or a run's config.yaml as a dict), as the
    modality's own flags say (DNA: --max_length_dna, --truncate_dna_per_side)."""
    from biopost.modality import get_modality
    max_length, per_side = get_modality(modality_name).truncation(cfg)
    return {modality_name: Truncation(int(max_length or 0), int(per_side or 0))}


@dataclass
class Example:
    id: str
    input_ids: list[int]
    labels: list[int] | None
    bio: list[tuple[str, str]]      # (modality, sequence) in prompt order
    gold: str | None = None
    truncated: bool = False


def _n_tokens(model):
    return lambda item: model.encoders[item.modality].tokens_for(item.sequence)


def row_id(row: dict, fallback: str, id_field: str | None = None) -> str:
    """`id`, else the modality's id field (e.g. a protein accession), else where the row came from."""
    for key in ("id", id_field):
        if key and row.get(key) not in (None, ""):
            return str(row[key])
    return row.get("_source", fallback)


def _id_field(task) -> str | None:
    from biopost.modality import get_modality
    return get_modality(task.modality).id_field


def encode_training_example(model, task, row: dict, max_text_tokens: int, system_prompt: str | None = None,
                            fallback_id: str = "?") -> Example:
    messages = task.prompt_messages(row, system_prompt) + [{"role": "assistant", "content": task.target_text(row)}]
    rendered = render(messages, _n_tokens(model))
    ex_id = row_id(row, fallback_id, _id_field(task))
    enc = encode(rendered, model.tokenizer, model.bio_token_ids, model.pad_token_ids, max_text_tokens, ex_id)
    return Example(ex_id, enc.input_ids, enc.labels, [(b.modality, b.sequence) for b in rendered.bio_items],
                   task.gold(row), enc.truncated)


def encode_prompt(model, task, row: dict, max_text_tokens: int = 0, system_prompt: str | None = None,
                  fallback_id: str = "?") -> Example:
    rendered = render(task.prompt_messages(row, system_prompt), _n_tokens(model), add_generation_prompt=True)
    ex_id = row_id(row, fallback_id, _id_field(task))
    enc = encode(rendered, model.tokenizer, model.bio_token_ids, model.pad_token_ids, 0, ex_id)
    ids = enc.input_ids
    truncated = False
    if max_text_tokens and enc.n_text_tokens > max_text_tokens:
        # prompts lose text from the left of the question, never bio tokens or the turn markers at the end
        raise DataError(f"example {ex_id}: prompt has {enc.n_text_tokens} text tokens, more than "
                        f"--max_length_text {max_text_tokens}")
    return Example(ex_id, ids, None, [(b.modality, b.sequence) for b in rendered.bio_items],
                   task.gold(row) if _has_gold(task, row) else None, truncated)


def _has_gold(task, row) -> bool:
    try:
        task.gold(row)
        return True
    except (KeyError, AttributeError):
        return False


def collate(examples: list[Example], pad_token_id: int, embeddings, left_pad: bool = False,
            device="cpu") -> dict:
    """Pad to the longest example. `embeddings(modality, sequence) -> Tensor[L, d]` (the cache)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    bio: dict[str, list[torch.Tensor]] = {}
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        sl = slice(width - n, width) if left_pad else slice(0, n)
        ids[i, sl] = torch.tensor(e.input_ids)
        mask[i, sl] = 1
        if e.labels is not None:
            labels[i, sl] = torch.tensor(e.labels)
        for modality, seq in e.bio:
            bio.setdefault(modality, []).append(embeddings(modality, seq))
    batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device), "bio_features": bio}
    if any(e.labels is not None for e in examples):
        batch["labels"] = labels.to(device)
    return batch


def collate_packed(examples: list[Example], embeddings, device="cpu") -> dict:
    """One packed row (B = 1): the examples back to back with no padding, position ids restarting
    at 0 for each, and cu_seqlens (1, D + 1) marking where each starts, so that the model's document
    mask keeps them from attending to each other and no loss falls on a boundary. Labels (the
    assistant-only mask) are each example's own, unchanged. The bio embeddings come in the order of
    their pad slots, as `collate`'s do."""
    if any(e.labels is None for e in examples):
        raise ValueError("collate_packed packs training examples: every example needs labels")
    lengths = [len(e.input_ids) for e in examples]
    ids = torch.tensor([t for e in examples for t in e.input_ids], dtype=torch.long).unsqueeze(0)
    labels = torch.tensor([t for e in examples for t in e.labels], dtype=torch.long).unsqueeze(0)
    positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    cu = torch.tensor([0] + lengths, dtype=torch.long).cumsum(0).unsqueeze(0)
    bio: dict[str, list[torch.Tensor]] = {}
    for e in examples:
        for modality, seq in e.bio:
            bio.setdefault(modality, []).append(embeddings(modality, seq))
    return {"input_ids": ids.to(device), "labels": labels.to(device), "position_ids": positions.to(device),
            "cu_seqlens": cu.to(device), "bio_features": bio}
