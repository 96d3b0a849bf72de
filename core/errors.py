"""The one root of turboprune's errors, and what each kind means to a command's exit status.

Every error class of the project derives from `TurboPruneError`, through one of two kinds:

- `UserError` (exit 2): the input is wrong (a spec, a flag, a name, a file given), and nothing
  was recorded, submitted or changed. The message says what to fix.
- `Failure` (exit 1): the input was fine, but something went wrong on the way: `CheckFailed` (a
  file on disk or a code snapshot failed its checks), `OutageError` (the store could not be
  reached or used). A FAILED run is reported, not raised.

`cli.tp_sweep.main` prints `error: MESSAGE` and exits with the class's `exit_code`, in one place.
Most classes also keep their builtin base (ValueError, LookupError, RuntimeError), so callers that
catch those go on catching them.

This module imports nothing: every layer may use it.
"""

from __future__ import annotations


class TurboPruneError(Exception):
    """Every error that turboprune raises on purpose; its message is meant for the user."""

    exit_code = 1


class UserError(TurboPruneError):
    """Bad input: nothing was changed. Exit 2."""

    exit_code = 2


class Failure(TurboPruneError):
    """The input was fine, the work failed. Exit 1."""

    exit_code = 1


class CheckFailed(Failure):
    """A file, a folder or a snapshot failed its checks: it is not used."""


class OutageError(Failure):
    """A service the command needs (the results store) could not be reached or used."""


class NotFound(UserError, LookupError):
    """A sweep, run or level named by the user is not there."""


class ConfigError(UserError, ValueError):
    """A trainer config or override that cannot be resolved (core/config.py, core/schema.py)."""
