"""Modalities: what a modality package tells the core about one kind of biological input.

The core names no modality. A package (BioReason: `dna`; BioReason-Pro: `protein`) registers a
`Modality` record from a torch-free module named by its `biopost.modalities` entry point; the
core asks the registry for everything it used to hard-code: the bio tokens of the chat format,
the alphabet rows are validated against, the default projector, which encoder to build from the
stage's flags, how to truncate, where a row keeps its id, the evaluation script sweeps call.

A modality also contributes flag fields to every stage config that builds a model (SFT, GRPO):
`--dna_model_name`, `--max_length_dna`, ... stay exactly the published flags, but they are
declared here, by the package that knows what they mean, and `--help` lists them under the
modality's heading. `with_modality_flags(cls)` returns the stage dataclass extended by them.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Callable

from biopost.registry import Registry, RegistryError


@dataclass(frozen=True)
class FlagField:
    """One config key / command-line flag a modality adds to the stage configs."""
    name: str
    type: Any
    default: Any
    help: str = ""


@dataclass(frozen=True)
class Modality:
    name: str                                  # the chat item type and the key of encoders / projectors
    bio_tokens: tuple[str, str, str]           # start, pad, end: rendered as start + n x pad + end
    alphabet: str                              # allowed sequence characters (upper case; input is upper-cased)
    default_projector: str                     # "linear" | "mlp"
    encoder_spec: Callable[[Any], dict]        # stage config -> {"model_name", "layer", "backend"}
    truncation: Callable[[Any], tuple[int, int]]  # stage config -> (max_length, per_side); 0 = off
    flags: tuple[FlagField, ...] = ()
    id_field: str | None = None                # a row's id lives here when it has no `id`
    eval_script: str | None = None             # what sweeps run to evaluate this modality's stages
    backends: tuple[str, ...] = ()             # the encoder backends the package registers (for --help / docs)
    description: str = ""

    def __post_init__(self):
        if len(self.bio_tokens) != 3 or len(set(self.bio_tokens)) != 3:
            raise RegistryError(f"modality {self.name!r}: bio_tokens must be three distinct strings "
                                f"(start, pad, end), got {self.bio_tokens!r}")
        if not self.alphabet or self.alphabet != self.alphabet.upper():
            raise RegistryError(f"modality {self.name!r}: alphabet must be a non-empty upper-case string")


MODALITIES: Registry[Modality] = Registry("modality")


def register_modality(modality: Modality) -> Modality:
    taken = {f.name: m for m in _registered() for f in m.flags if m.name != modality.name}
    clash = [f.name for f in modality.flags if f.name in taken]
    if clash:
        raise RegistryError(f"modality {modality.name!r}: flag(s) {', '.join(clash)} already belong to "
                            f"modality {taken[clash[0]].name!r}")
    MODALITIES.register(modality.name, modality)
    _extended.cache_clear()
    return modality


def get_modality(name: str) -> Modality:
    return MODALITIES.get(name)


def _registered() -> list[Modality]:
    return [MODALITIES.get(n) for n in MODALITIES.names()]


def all_bio_tokens() -> list[str]:
    """Every registered modality's bio tokens, modalities in name order. A fresh model adds all of
    them, so that one checkpoint can later see another modality's inputs; a saved model records
    its own tokens in its tokenizer, so loading never depends on what is installed."""
    return [t for m in _registered() for t in m.bio_tokens]


def flag(cfg, name: str):
    """A modality flag's value on a stage config, or its declared default when the config was
    built without the modality's fields (a plain dataclass in a test, a run config dict)."""
    if isinstance(cfg, dict):
        if name in cfg:
            return cfg[name]
    elif hasattr(cfg, name):
        return getattr(cfg, name)
    for m in _registered():
        for f in m.flags:
            if f.name == name:
                return f.default
    raise KeyError(f"no modality declares the flag {name!r}")


# --- stage configs extended by the modalities' flags ---------------------------------------------

def wants_modality_flags(cls) -> bool:
    return bool(getattr(cls, "modality_flags", False))


def with_modality_flags(cls):
    """`cls` (a stage config dataclass with `modality_flags = True`) plus a field for every flag of
    every registered modality; other classes unchanged. Cached: one class per registry state."""
    if not wants_modality_flags(cls) or getattr(cls, "_biopost_extended", False):
        return cls
    return _extended(cls, tuple(m.name for m in _registered()))


@functools.lru_cache(maxsize=None)
def _extended(cls, modality_names: tuple[str, ...]):
    own = {f.name for f in dataclasses.fields(cls)}
    extra = []
    for name in modality_names:
        m = MODALITIES.get(name)
        for f in m.flags:
            if f.name in own:
                raise RegistryError(f"modality {m.name!r}: flag {f.name!r} clashes with a core field of "
                                    f"{cls.__name__}")
            default = f.default
            if isinstance(default, (list, dict)):
                spec = field(default_factory=lambda d=default: type(d)(d),
                             metadata={"help": f.help, "modality": m.name})
            else:
                spec = field(default=default, metadata={"help": f.help, "modality": m.name})
            extra.append((f.name, f.type, spec))
    new = dataclasses.make_dataclass(cls.__name__, extra, bases=(cls,))
    new.__module__ = cls.__module__
    new.__doc__ = cls.__doc__
    new._biopost_extended = True
    return new
