"""The `biopost` console script: one sub-command group per core area.

Each group lives in its own module and is imported only when called, so that
`biopost sweep status` and `biopost harvest` start in about a second on a login node.
"""
import importlib
import sys

GROUPS = {
    # name: ("module" with a main(argv) function, or "module:function"; one-line help)
    "data": ("biopost.commands:data_main", "data validation and the modalities' data commands (synthetic data, splits)"),
    "eval": ("biopost.commands:eval_main", "the modalities' evaluation commands (e.g. GO metrics of prediction files)"),
    "sweep": ("biopost.sweeps.cli", "plan / submit / status / cancel declarative sweeps"),
    "harvest": ("biopost.harvest.cli", "merge every cell's metrics.json into ID/OOD tables and plots"),
    "cpt": ("biopost.train.cpt_cli", "continued pre-training helpers (select-best)"),
    "model": ("biopost.model.cli", "merge a checkpoint into a plain HF model directory"),
}


def usage() -> str:
    lines = ["usage: biopost <group> [args...]", "", "groups:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in GROUPS.items()]
    lines += ["", "Run `biopost <group> --help` for a group's commands."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    group, rest = argv[0], argv[1:]
    if group not in GROUPS:
        print(f"biopost: unknown group {group!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, _, func = GROUPS[group][0].partition(":")
    rc = getattr(importlib.import_module(module_name), func or "main")(rest)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
