"""Sub-commands that modality packages contribute to a `biopost` group (`biopost data ...`,
`biopost eval ...`).

A command is a function `main(argv: list[str]) -> int`, registered (usually lazily, as
`"package.module:main"`) in its group's registry with a one-line help. The group's dispatcher
lists every registered command in its `--help`, so `biopost data --help` shows what the
installed modalities offer without importing them.
"""
from __future__ import annotations

import argparse
import sys

from biopost.registry import Registry

COMMANDS: dict[str, Registry] = {
    "data": Registry("`biopost data` command"),
    "eval": Registry("`biopost eval` command"),
}


def command_group(group: str) -> Registry:
    return COMMANDS[group]


def dispatch(group: str, argv, description: str) -> int:
    """`biopost <group> <command> ...`: run a registered command; `--help` lists them all."""
    registry = COMMANDS[group]
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        lines = [f"usage: biopost {group} <command> [args...]", "", description, "", "commands:"]
        lines += [f"  {name:<20} {registry.help(name)}" for name in registry.names()]
        lines += ["", f"Run `biopost {group} <command> --help` for a command's options."]
        print("\n".join(lines), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in registry:
        print(f"biopost {group}: unknown command {name!r}; available: {', '.join(registry.names())}",
              file=sys.stderr)
        return 2
    return int(registry.get(name)(rest) or 0)


def validate_main(argv=None) -> int:
    """`biopost data validate`: load a dataset through the task's schema, print what was kept."""
    p = argparse.ArgumentParser(prog="biopost data validate",
                                description="Validate a dataset against a task's schema and print the counts.")
    p.add_argument("--task", default="kegg", help="a registered task name")
    p.add_argument("--data_path", required=True)
    p.add_argument("--splits", default="train,id_test,ood_test")
    p.add_argument("--skip_invalid", action="store_true")
    args = p.parse_args(argv)
    from biopost.data.examples import load_task_data
    from biopost.errors import UserError
    from biopost.tasks import get_task
    try:
        load_task_data(get_task(args.task), args.data_path, tuple(args.splits.split(",")),
                       skip_invalid=args.skip_invalid, log=print)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


COMMANDS["data"].register("validate", validate_main,
                          help="validate a dataset against a task schema and print counts")


def data_main(argv=None) -> int:
    return dispatch("data", sys.argv[1:] if argv is None else argv,
                    "Data validation and the data commands of the installed modality packages.")


def eval_main(argv=None) -> int:
    return dispatch("eval", sys.argv[1:] if argv is None else argv,
                    "Evaluation commands of the installed modality packages.")
