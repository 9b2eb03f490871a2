"""How every stage entry point ends: one exit-code convention and one error wrapper.

    0   done
    1   a user error: bad input, config, data, checkpoint, name (one `error:` line on stderr)
    2   usage: bad command-line syntax (argparse)
    75  checkpointed after SIGTERM / SIGUSR1: requeue me (biopost.signals.REQUEUE_EXIT_CODE)

`run_stage` catches only the project's `UserError` types: anything else is a programming error
and keeps its traceback (with exit code 1 from Python), so a crash never reads like bad input.
BIOPOST_DEBUG=1 shows the traceback of a user error too. Torch-free.
"""
from __future__ import annotations

import os
import sys

from biopost.errors import UserError
from biopost.signals import REQUEUE_EXIT_CODE

EXIT_DONE = 0
EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_REQUEUE = REQUEUE_EXIT_CODE


def error_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return f"error: {text}"


def run_stage(fn, cfg) -> int:
    """Run a stage; bad input ends with one clear line instead of a traceback."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return fn(cfg)
    except UserError as e:
        if os.environ.get("BIOPOST_DEBUG"):
            raise
        print(error_line(e), file=sys.stderr)
        return EXIT_USER_ERROR
