"""Where bio-post keeps caches: never inside a data directory (a mistake of the published code).

BIOPOST_CACHE_DIR (default $XDG_CACHE_HOME/biopost or ~/.cache/biopost) holds the embedding
cache and the materialized tiny models; sweeps point every cell of a sweep at the same one.
"""
import os
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent / "resources"


def cache_root() -> Path:
    explicit = os.environ.get("BIOPOST_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "biopost"
