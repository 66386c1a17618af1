"""The one error type the trainer raises for bad input; the CLI prints it as one line, exit 2."""

from __future__ import annotations


class TSOTrainError(Exception):
    """Bad input or a run that must stop (the message is one line meant for the user)."""


class NonFiniteLossError(TSOTrainError):
    """A NaN or infinite loss: the run stops before the optimiser step, checkpoints untouched."""
