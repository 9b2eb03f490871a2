"""Preemption: SIGTERM / SIGUSR1 mean "checkpoint now and exit so the job can be requeued".

SLURM sends SIGUSR1 `--signal=USR1@N` seconds before the time limit, and SIGTERM on
preemption or `scontrol requeue`. The training loop polls `StopFlag.requested` at optimizer-step
boundaries, saves a checkpoint and exits with REQUEUE_EXIT_CODE, which the batch script turns
into `scontrol requeue` of its own array task.
"""
import signal

# EX_TEMPFAIL from sysexits.h: "temporary failure, try again". Not 0 (done) and not 1 (crash).
REQUEUE_EXIT_CODE = 75


class StopFlag:
    def __init__(self, signals=(signal.SIGTERM, signal.SIGUSR1)):
        self.requested = None  # the signal number once one arrived
        self._previous = {}
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = signum

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __bool__(self):
        return self.requested is not None
