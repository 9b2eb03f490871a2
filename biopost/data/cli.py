"""`biopost data ...`: data validation, plus the commands the modality packages contribute
(BioReason: `synth-kegg`, `kegg-network-split`; BioReason-Pro: its GO data commands)."""
from __future__ import annotations

import argparse
import sys

from biopost.commands import COMMANDS


def validate_main(argv=None) -> int:
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


def main(argv=None) -> int:
    return dispatch("data", sys.argv[1:] if argv is None else argv,
                    "Data validation and the data commands of the installed modality packages.")
