"""Sub-commands that modality packages contribute to a `biopost` group (`biopost data ...`,
`biopost eval ...`).

A command is a function `main(argv: list[str]) -> int`, registered (usually lazily, as
`"package.module:main"`) in its group's registry with a one-line help. The group's dispatcher
lists every registered command in its `--help`, so `biopost data --help` shows what the
installed modalities offer without importing them.
"""
from __future__ import annotations

from biopost.registry import Registry

COMMANDS: dict[str, Registry] = {
    "data": Registry("`biopost data` command"),
    "eval": Registry("`biopost eval` command"),
}


def command_group(group: str) -> Registry:
    return COMMANDS[group]
