"""CPT's data: the training stream's source, the held-out documents and their blocks (HeldOut), and
the run's length in optimizer steps (size_run). biopost/train/cpt.py trains on them."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from biopost.data.text import TextDataError, TextSource, count_tokens, make_encoder, pack, read_documents, separator_id


@dataclass
class HeldOut:
    """The training source, the held-out documents and their blocks, and the tokenizing functions."""
    train_source: object
    eval_source: object
    eval_texts: list
    eval_blocks: list
    eval_skipped: int
    train_start: tuple
    sep: int
    encode: object

    @classmethod
    def read(cls, cfg, tokenizer) -> "HeldOut":
        sep = separator_id(tokenizer)
        encode = make_encoder(tokenizer)
        source_kw = dict(field=cfg.text_field, skip_invalid=cfg.skip_invalid, hf_split=cfg.hf_split,
                         hf_name=cfg.hf_name, hf_data_files=cfg.hf_data_files, trust_remote_code=cfg.trust_remote_code)
        train_source = TextSource(cfg.data_path, **source_kw)
        eval_source = TextSource(cfg.eval_data_path, **source_kw) if cfg.eval_data_path else train_source
        eval_texts, after_eval, eval_skipped = read_documents(eval_source, cfg.eval_docs)
        if not eval_texts:
            raise TextDataError(f"{eval_source.describe()}: no documents to hold out for evaluation")
        # Held out from the training corpus itself: every training pass starts after those documents.
        train_start = after_eval if eval_source is train_source else (0, 0)
        full, remainder = pack(encode(eval_texts), cfg.max_length, sep)
        eval_blocks = full + ([remainder] if len(remainder) >= 2 else [])  # evaluation keeps the tail block
        return cls(train_source, eval_source, eval_texts, eval_blocks, eval_skipped, train_start, sep, encode)


def size_run(cfg, ckpt, saved: dict, data: HeldOut, blocks_per_step: int) -> int:
    """Optimizer steps of the run: --max_steps, else one tokenizing pass over the corpus sizes it
    from num_train_epochs; a resumed run keeps its step count unless --max_steps says otherwise."""
    T = cfg.max_length
    if cfg.max_steps > 0:
        if ckpt is None and cfg.validate_data and data.train_source.hf is None:
            n_rows = sum(1 for _ in data.train_source.documents(*data.train_start))
            print(f"cpt: validated {n_rows} rows of {data.train_source.describe()}", file=sys.stderr)
        return cfg.max_steps
    if ckpt is not None:
        return int(saved["total_steps"])
    counts = count_tokens(data.train_source, data.encode, start=data.train_start)
    steps_per_pass = counts["tokens"] // T // blocks_per_step
    if steps_per_pass == 0:
        raise TextDataError(f"{data.train_source.describe()}: {counts['tokens']} training tokens do not fill one "
                            f"optimizer step ({blocks_per_step} blocks of {T} tokens)")
    print(f"cpt: {counts['documents']} documents, {counts['tokens']} tokens, {steps_per_pass} steps per pass",
          file=sys.stderr)
    return math.ceil(cfg.num_train_epochs * steps_per_pass - 1e-9)
