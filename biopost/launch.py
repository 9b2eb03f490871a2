"""torchrun, keeping the requeue exit code: `python -m biopost.launch [torchrun flags] script [args]`.

torchrun reports any worker's non-zero exit as a failure and itself exits 1, and a SIGTERM it
receives ends it with a traceback, also 1; the batch scripts requeue a job only on 75
(biopost.signals.REQUEUE_EXIT_CODE). This runs torchrun's own `run` and maps its outcome: every
failed worker exited 75 (or was stopped by torchrun after another one did) -> 75; torchrun got
SIGTERM or SIGUSR1 -> 75 once it has forwarded the signal to the workers and waited for them (the
stages checkpoint on either signal and every checkpoint is atomic, so requeueing is right even if a
worker was cut short); anything else -> the first failed worker's exit code. SIGUSR1 (SLURM's
`--signal=USR1@N` before the time limit) is added to the signals torchrun forwards; by default it
would kill torchrun and orphan the workers. Torch is imported inside `main` only.
"""
from __future__ import annotations

import os
import signal
import sys

from biopost.signals import REQUEUE_EXIT_CODE

FORWARDED = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"


def exit_code_of(failure_codes: list[int]) -> int:
    """The launcher's exit code for the failed workers' exit codes (torchrun's -N = killed by signal N)."""
    if REQUEUE_EXIT_CODE in failure_codes and all(c in (REQUEUE_EXIT_CODE, -signal.SIGTERM) for c in failure_codes):
        return REQUEUE_EXIT_CODE
    positive = [c for c in failure_codes if c > 0]
    return positive[0] if positive else 1


def with_forwarded_signals(argv: list[str], option_names) -> list[str]:
    """torchrun's argv with SIGUSR1 among the signals it forwards, unless the caller chose them.
    torch >= 2.8 takes --signals-to-handle (and sets the variable from it, so the variable alone is
    overwritten); older versions read TORCHELASTIC_SIGNALS_TO_HANDLE only."""
    if any(a.split("=")[0] in ("--signals-to-handle", "--signals_to_handle") for a in argv):
        return argv
    os.environ.setdefault("TORCHELASTIC_SIGNALS_TO_HANDLE", FORWARDED)
    if "--signals-to-handle" in option_names:
        return ["--signals-to-handle", os.environ["TORCHELASTIC_SIGNALS_TO_HANDLE"], *argv]
    return argv


def main(argv=None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run
    parser = get_args_parser()
    argv = with_forwarded_signals(list(sys.argv[1:] if argv is None else argv), parser._option_string_actions)
    try:
        run(parser.parse_args(argv))
    except ChildFailedError as e:
        codes = [f.exitcode for f in e.failures.values()]
        code = exit_code_of(codes)
        print(f"biopost.launch: workers exited with {sorted(set(codes))}: exit {code}", file=sys.stderr)
        return code
    except SignalException as e:
        if e.sigval in (signal.SIGTERM, signal.SIGUSR1):
            print(f"biopost.launch: got {e.sigval.name}, forwarded it to the workers: exit {REQUEUE_EXIT_CODE} "
                  f"(requeue)", file=sys.stderr)
            return REQUEUE_EXIT_CODE
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
