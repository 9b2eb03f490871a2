"""On-disk embedding cache for frozen encoders.

Key = sha256(backend, weights id, layer, sequence). Values live in safetensors shards under
`<cache root>/embeddings/<backend>-<encoder key>/`; each process writes its own uniquely named
shard (temp name + fsync + rename, biopost.files), so the array tasks of a sweep can share one cache directory: a
sequence is encoded once per cache, and later runs only read. Reading is memory-mapped.
"""
from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from biopost.files import ensure_dir, write_bytes_atomic
from biopost.paths import cache_root


class EmbeddingCache:
    def __init__(self, encoder, root: str | Path | None = None, dtype: torch.dtype = torch.float32):
        self.encoder = encoder
        ident = f"{encoder.backend}|{encoder.name}|{encoder.weights_id}|{encoder.layer}"
        self.prefix = hashlib.sha256(ident.encode()).hexdigest()[:16]
        base = Path(root) if root else cache_root()
        self.dir = base / "embeddings" / f"{encoder.backend}-{self.prefix}"
        ensure_dir(self.dir)
        self.dtype = dtype
        self._index: dict[str, Path] = {}
        self._handles: dict[Path, object] = {}
        self._scan()

    def key(self, sequence: str) -> str:
        e = self.encoder
        return hashlib.sha256(f"{e.backend}|{e.weights_id}|{e.layer}|{sequence.upper()}".encode()).hexdigest()

    def _scan(self) -> None:
        for shard in sorted(self.dir.glob("shard-*.safetensors")):
            if shard in self._handles:
                continue
            handle = safe_open(str(shard), framework="pt")
            self._handles[shard] = handle
            for k in handle.keys():
                self._index.setdefault(k, shard)

    def __contains__(self, sequence: str) -> bool:
        return self.key(sequence) in self._index

    def ensure(self, sequences, batch_size: int = 64, progress: bool = False) -> int:
        """Encode every sequence not yet cached; returns how many were encoded."""
        wanted = {self.key(s): s for s in sequences}
        missing = [k for k in wanted if k not in self._index]
        if missing:
            self._scan()  # another job may have written them meanwhile
            missing = [k for k in missing if k not in self._index]
        if not missing:
            return 0
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(missing), desc=f"encoding with {self.encoder.name}", unit="seq")
        for start in range(0, len(missing), batch_size):
            keys = missing[start:start + batch_size]
            embs = self.encoder.encode([wanted[k] for k in keys])
            self._write({k: e.to(self.dtype).contiguous() for k, e in zip(keys, embs)})
            if bar:
                bar.update(len(keys))
        if bar:
            bar.close()
        return len(missing)

    def _write(self, tensors: dict[str, torch.Tensor]) -> None:
        name = f"shard-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors"
        final = self.dir / name
        # temp file + fsync + rename, mode 0o666 & ~umask (other users of the cache read it);
        # a full disk is an OutputError naming the shard
        write_bytes_atomic(final, safetensors_bytes(
            tensors, metadata={"encoder": self.encoder.name, "layer": str(self.encoder.layer)}))
        handle = safe_open(str(final), framework="pt")
        self._handles[final] = handle
        for k in tensors:
            self._index.setdefault(k, final)

    def get(self, sequence: str) -> torch.Tensor:
        key = self.key(sequence)
        shard = self._index.get(key)
        if shard is None:
            self.ensure([sequence])
            shard = self._index[key]
        return self._handles[shard].get_tensor(key).float()
