"""Bio text for continued pre-training: shard discovery, lazy documents, packing into blocks.

A corpus is a directory of `*.jsonl` / `*.jsonl.gz` shards (searched recursively, read in sorted
path order), a single such file, or a HuggingFace dataset name (streamed with `datasets`, imported
only then). Rows are `{"text": ...}` (the FineFineWeb format); other keys are ignored. Documents
are read one line at a time, so a corpus may be far larger than memory.

Packing: each document is tokenized without special tokens, followed by one separator token, and
the concatenation is cut into blocks of exactly `block_size` tokens. No token is lost or repeated
at a block boundary; the only tokens dropped are the final `< block_size` of a pass (the
"remainder"), because a training block must be full.

A position in the corpus is `(shard index, line index)` of the next unread row. `BlockStream.state()`
(that position, the tokens read but not yet emitted, the pass number and the skipped-row count)
is plain JSON, and a stream rebuilt from it continues with exactly the blocks the old one would
have produced: this is the data position a training checkpoint stores.

This module imports neither torch nor transformers.
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from biopost.errors import UserError
from biopost.paths import RESOURCES

SHARD_SUFFIXES = (".jsonl", ".jsonl.gz")
# `biopost:bio_text/train` names data committed inside the package (biopost/resources/...), so a
# config that uses it works from any working directory and from an installed package.
RESOURCE_PREFIX = "biopost:"


class TextDataError(UserError, ValueError):
    """A bad corpus or row; the message names the file, the line and the field."""


class Doc(NamedTuple):
    shard: int        # index into the source's shard list (0 for a HF dataset)
    line: int         # 0-based line (or row) index inside that shard
    text: str | None  # None for an invalid row that is being skipped (--skip_invalid)
    error: str | None = None


def resolve_data_path(path: str) -> str:
    path = str(path)
    if path.startswith(RESOURCE_PREFIX):
        return str(RESOURCES / path[len(RESOURCE_PREFIX):])
    return path


def discover_shards(path) -> list[Path]:
    """The shard files of a local corpus path, in reading order."""
    p = Path(resolve_data_path(path))
    if p.is_file():
        return [p]
    if p.is_dir():
        shards = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(SHARD_SUFFIXES))
        if not shards:
            raise TextDataError(f"{p}: no *.jsonl or *.jsonl.gz shards in this directory")
        return shards
    raise TextDataError(f"{p}: no such file or directory")


def is_local(path) -> bool:
    """Local if it exists or looks like a path; otherwise a HuggingFace dataset name."""
    text = resolve_data_path(path)
    return Path(text).exists() or text.startswith((".", "/", "~")) or text.endswith(SHARD_SUFFIXES)


def check_row(row, field: str, where: str) -> tuple[str | None, str | None]:
    """(text, None) for a valid row, else (None, message naming `where` and the field)."""
    if not isinstance(row, dict):
        return None, f"{where}: expected a JSON object with a {field!r} field, got {type(row).__name__}"
    if field not in row:
        return None, f"{where}, field {field!r}: missing (keys: {', '.join(map(str, list(row)[:8])) or 'none'})"
    value = row[field]
    if not isinstance(value, str):
        return None, f"{where}, field {field!r}: expected a string, got {type(value).__name__}"
    if not value.strip():
        return None, f"{where}, field {field!r}: empty text"
    return value, None


class TextSource:
    """Where documents come from: local jsonl shards, or a HF dataset streamed lazily."""

    def __init__(self, path: str, field: str = "text", skip_invalid: bool = False,
                 hf_split: str = "train", hf_name: str | None = None, hf_data_files: str | None = None,
                 trust_remote_code: bool = False):
        self.path, self.field, self.skip_invalid = str(path), field, skip_invalid
        self.hf = None if is_local(path) else dict(split=hf_split, name=hf_name, data_files=hf_data_files,
                                                   trust_remote_code=trust_remote_code)
        self.shards = discover_shards(path) if self.hf is None else []

    def describe(self) -> str:
        if self.hf is None:
            return f"{resolve_data_path(self.path)} ({len(self.shards)} shard{'s' * (len(self.shards) != 1)})"
        return f"HF dataset {self.path} [{self.hf['split']}] (streaming)"

    def documents(self, shard: int = 0, line: int = 0) -> Iterator[Doc]:
        """Documents from position (shard, line) on, read lazily. A bad row raises
        TextDataError, or with skip_invalid comes back as Doc(text=None, error=...)."""
        if self.hf is not None:
            yield from self._hf_documents(line)
            return
        for s in range(shard, len(self.shards)):
            yield from self._shard_documents(s, line if s == shard else 0)

    def _shard_documents(self, s: int, start: int) -> Iterator[Doc]:
        path = self.shards[s]
        opener = gzip.open if path.name.endswith(".gz") else open
        # Binary lines: skipping to `start` on resume needs no decoding or JSON parsing.
        with opener(path, "rb") as fh:
            for i, raw in enumerate(fh):
                if i < start or not raw.strip():
                    continue  # already consumed, or a blank line (not a row)
                where = f"{path}, line {i + 1}"
                try:
                    row = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError as e:
                    text, error = None, f"{where}: not UTF-8 ({e})"
                except json.JSONDecodeError as e:
                    text, error = None, f"{where}: not valid JSON ({e.msg} at column {e.colno})"
                else:
                    text, error = check_row(row, self.field, where)
                yield self._checked(Doc(s, i, text, error))

    def _hf_documents(self, start: int) -> Iterator[Doc]:
        try:
            import datasets
        except ImportError:
            raise TextDataError(f"{self.path}: not a local file or directory, and loading it as a HuggingFace "
                                "dataset needs the `datasets` package (pip install datasets)") from None
        kw = {k: v for k, v in self.hf.items() if v is not None and k != "trust_remote_code"}
        if self.hf["trust_remote_code"]:
            kw["trust_remote_code"] = True
        try:
            ds = datasets.load_dataset(self.path, streaming=True, **kw)
        except Exception as e:  # noqa: BLE001 - any failure here means "cannot read this corpus"
            raise TextDataError(f"{self.path}: no such local file or directory, and loading it as a "
                                f"HuggingFace dataset failed: {type(e).__name__}: {e}") from None
        if start:
            ds = ds.skip(start)
        files = f" ({self.hf['data_files']})" if self.hf["data_files"] else ""
        where = f"{self.path}{files} [{self.hf['split']}]"
        for i, row in enumerate(ds, start=start):
            text, error = check_row(row, self.field, f"{where}, row {i + 1}")
            yield self._checked(Doc(0, i, text, error))

    def _checked(self, doc: Doc) -> Doc:
        if doc.error is not None and not self.skip_invalid:
            raise TextDataError(doc.error + " (use --skip_invalid to skip and count such rows)")
        return doc


def separator_id(tokenizer) -> int:
    """The token placed after every document.

    Qwen3 was pre-trained with `<|endoftext|>` between documents; its `eos_token` is `<|im_end|>` in the
    chat checkpoints (the end of a turn, not of a document), so `<|endoftext|>` wins when the vocabulary
    has it, and other tokenizers fall back to their eos_token.
    """
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return int(vocab["<|endoftext|>"])
    if tokenizer.eos_token_id is None:
        raise TextDataError("the tokenizer has neither <|endoftext|> nor an eos_token to separate documents")
    return int(tokenizer.eos_token_id)


def make_encoder(tokenizer) -> Callable[[list[str]], list[list[int]]]:
    """Batch tokenizer for document text: no BOS/EOS added (the packer adds the separator), and
    special-token strings occurring in web text are tokenized as plain text, so a document cannot
    forge a document boundary."""
    def encode(texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return tokenizer(texts, add_special_tokens=False, split_special_tokens=True, verbose=False)["input_ids"]
    return encode


def pack(token_lists, block_size: int, sep_id: int) -> tuple[list[list[int]], list[int]]:
    """(full blocks, remainder) of the documents' tokens, each document followed by `sep_id`.
    `sum(blocks, []) + remainder == sum((doc + [sep_id] for doc in token_lists), [])`."""
    stream: list[int] = []
    for ids in token_lists:
        stream.extend(ids)
        stream.append(sep_id)
    n_full = len(stream) // block_size
    return [stream[i * block_size:(i + 1) * block_size] for i in range(n_full)], stream[n_full * block_size:]


def read_documents(source: TextSource, n: int) -> tuple[list[str], tuple[int, int], int]:
    """The first `n` valid documents of `source` (all if it has fewer), the position after the last one
    taken, and how many invalid rows were skipped on the way."""
    texts, position, skipped = [], (0, 0), 0
    for doc in source.documents():
        if len(texts) >= n:
            break
        position = (doc.shard, doc.line + 1)
        if doc.text is None:
            skipped += 1
        else:
            texts.append(doc.text)
    return texts, position, skipped


class BlockStream:
    """Packed training blocks over repeated passes of a TextSource, resumable from `state()`.

    Every pass starts at `start` (after the held-out documents when those come from the start of the
    same corpus). `take(n)` returns the next n blocks of the current pass, or None when the pass ends
    first: then the unfinished batch and the remainder are dropped and the next pass begins, so no
    batch mixes two passes.
    """

    def __init__(self, source: TextSource, encode, sep_id: int, block_size: int,
                 start: tuple[int, int] = (0, 0), state: dict | None = None, tokenize_batch: int = 256,
                 warn=None):
        self.source, self.encode, self.sep_id, self.block_size = source, encode, sep_id, block_size
        self.start, self.tokenize_batch = (int(start[0]), int(start[1])), tokenize_batch
        self.warn = warn or (lambda msg: print(f"warning: skipped {msg}", file=sys.stderr))
        state = state or {"epoch": 0, "shard": self.start[0], "line": self.start[1], "buffer": [], "skipped": 0}
        self.epoch = int(state["epoch"])
        self.position = (int(state["shard"]), int(state["line"]))
        self.buffer = list(state["buffer"])
        self.skipped = int(state["skipped"])
        self._blocks = None

    def state(self) -> dict:
        return {"epoch": self.epoch, "shard": self.position[0], "line": self.position[1],
                "buffer": list(self.buffer), "skipped": self.skipped}

    def take(self, n: int) -> list[list[int]] | None:
        if self._blocks is None:
            self._blocks = self._pass_blocks()
        out = []
        for block in self._blocks:
            out.append(block)
            if len(out) == n:
                return out
        self.epoch += 1
        self.position, self.buffer, self._blocks = self.start, [], None
        return None

    def _pass_blocks(self) -> Iterator[list[int]]:
        # Invariant at every `yield`: `position` is the row after the last document in the buffer and
        # `buffer` holds exactly the tokens not yet emitted, so state() taken there resumes exactly.
        size = self.block_size
        while len(self.buffer) >= size:
            block, self.buffer = self.buffer[:size], self.buffer[size:]
            yield block
        chunk: list[Doc] = []
        docs = self.source.documents(*self.position)
        while True:
            chunk.clear()
            for doc in docs:
                chunk.append(doc)
                if len(chunk) == self.tokenize_batch:
                    break
            if not chunk:
                return
            token_lists = iter(self.encode([d.text for d in chunk if d.text is not None]))
            for doc in chunk:
                if doc.text is None:
                    self.skipped += 1
                    self.warn(doc.error)
                else:
                    self.buffer.extend(next(token_lists))
                    self.buffer.append(self.sep_id)
                self.position = (doc.shard, doc.line + 1)
                while len(self.buffer) >= size:
                    block, self.buffer = self.buffer[:size], self.buffer[size:]
                    yield block


def count_tokens(source: TextSource, encode, start: tuple[int, int] = (0, 0), tokenize_batch: int = 256) -> dict:
    """One tokenizing pass from `start`: documents, tokens (separators included) and skipped rows.
    Full blocks per pass = tokens // block_size, exactly as BlockStream produces them."""
    docs = tokens = skipped = 0
    batch: list[str] = []

    def flush():
        nonlocal tokens
        tokens += sum(len(ids) + 1 for ids in encode(batch))
        batch.clear()

    for doc in source.documents(*start):
        if doc.text is None:
            skipped += 1
            continue
        docs += 1
        batch.append(doc.text)
        if len(batch) == tokenize_batch:
            flush()
    flush()
    return {"documents": docs, "tokens": tokens, "skipped": skipped}
