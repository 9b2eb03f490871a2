"""The project's error types: everything a user can cause, as opposed to a programming error.

Entry points catch `UserError` (and only it) and print one `error:` line; anything else keeps its
traceback, because it is a bug to report, not an input to fix. Each subclass stays a `ValueError`
(or `LookupError`) so that code written against the standard types keeps working.

This module imports nothing heavy: sweeps and harvest use it on login nodes.
"""
from __future__ import annotations


class UserError(Exception):
    """Base of every error whose message tells the user what to fix."""


class NotRegisteredError(UserError, KeyError):
    """A name (task, reward, modality, encoder backend, engine, command) that nothing registered."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, incomplete, or asks for something the user did not allow."""


class BadSplitError(UserError, ValueError):
    """A data split name that the stage does not know or the data does not have."""


class MissingCheckpointError(UserError, FileNotFoundError):
    """A checkpoint (or a part of one) that is not where the user said it is."""


class ModelLoadError(UserError, OSError):
    """A text model, tokenizer or encoder that cannot be loaded from the name or path given."""
