"""Exception hierarchy mapped onto the BIDS Apps execution-spec exit codes.

Only ``cli.main`` catches these and turns them into an exit status; library code raises the most
specific class with a message that says what is wrong, which file, and how to fix it.
"""

from __future__ import annotations


class SpinalBidsAppError(Exception):
    """Base class: a failure the user can act on; ``exit_code`` follows the execution spec."""

    exit_code: int = 1


class UsageError(SpinalBidsAppError):
    """Bad flags or combinations of flags, or an engine asked for whose tools are missing."""

    exit_code = 64


class UnknownAnalysisLevel(UsageError):
    exit_code = 17


class InvalidDatasetError(SpinalBidsAppError):
    """The input dataset failed BIDS validation."""

    exit_code = 16


class NoDataSelectedError(SpinalBidsAppError):
    """Participant labels or filters matched no data."""

    exit_code = 18


class InputDataError(SpinalBidsAppError):
    """An input file exists but cannot be used (corrupt, 4-D, empty mask, too short a cord...)."""

    exit_code = 65


class MissingInputError(SpinalBidsAppError):
    """A required input file or folder is absent."""

    exit_code = 66


class OutputNotWritableError(SpinalBidsAppError):
    exit_code = 73


class OutputIOError(SpinalBidsAppError):
    exit_code = 74


class TemporaryFailure(SpinalBidsAppError):
    """Retry later (for example a lock held by another process for too long)."""

    exit_code = 75


class EngineUnavailable(UsageError):
    """An engine was requested whose external tools are not installed."""


class ConfigError(UsageError):
    """The configuration file or a combination of options is invalid."""


class SubjectFailed(SpinalBidsAppError):
    """A single-subject run failed: keeps the exit code of the underlying error."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class InsufficientCoverageError(MissingInputError):
    """The cord covers less than ``--min-cord-coverage`` mm of the image (exit 66)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM received: the run stops like after Ctrl-C (``cli.main`` exits 143, 128 + 15)."""
