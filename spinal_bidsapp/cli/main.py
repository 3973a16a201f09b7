"""``spinal_bidsapp BIDS_DIR OUTPUT_DIR {participant,group} [options]``: the entry point.

The only module that prints to the user and decides exit codes (BIDS Apps execution spec):
0 ok, 1 unexpected error, 16 validation failed, 17 unknown analysis level, 18 selection matched
nothing, 64 usage error, 65 unusable input, 66 required input missing, 73 cannot create output,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import errno
import logging
import sys
import traceback
from collections.abc import Sequence

from spinal_bidsapp.cli.parser import parse_config
from spinal_bidsapp.errors import SpinalBidsAppError, Terminated
from spinal_bidsapp.runtime.lifetime import sigterm_as_interrupt
from spinal_bidsapp.runtime.runlog import FILE_ONLY, one_line, setup_logging

logger = logging.getLogger("spinal_bidsapp")


def _verbosity(argv: Sequence[str]) -> int:
    count = 0
    for arg in argv:
        if arg == "--verbose":
            count += 1
        elif arg.startswith("-") and not arg.startswith("--") and set(arg[1:]) == {"v"}:
            count += len(arg) - 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = _verbosity(argv)
    setup_logging(None, verbose=verbose)  # the console, until run() knows the log file
    with sigterm_as_interrupt():
        return _main(argv, verbose)


def _main(argv: list[str], verbose: int) -> int:
    try:
        config = parse_config(argv)
        # The one deferred import of the package's own code: run pulls in every level, engine
        # and pybids (about 1.5 s), which --help, --version and --bids-exec-spec do not need.
        from spinal_bidsapp.run import run

        return run(config)
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0)
    except Terminated:
        logger.error("stopped by SIGTERM; rerun the same command to resume (finished steps are "
                     "reused)")
        print("spinal_bidsapp: terminated (SIGTERM); rerun the same command to resume",
              file=sys.stderr)
        return 143
    except SpinalBidsAppError as exc:
        if verbose:
            traceback.print_exc()
        print(f"spinal_bidsapp: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        logger.error("interrupted (Ctrl-C); rerun the same command to resume")
        print("spinal_bidsapp: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        logger.error("unexpected error", exc_info=True, extra=FILE_ONLY)  # console too with -v
        denied = _permission_error(exc)
        if denied is not None:
            print(f"spinal_bidsapp: error: cannot write {denied}: permission denied; fix its "
                  "permissions or choose another output directory", file=sys.stderr)
            return 73
        disk = _disk_error(exc)
        if disk is not None:
            print(f"spinal_bidsapp: error: a write failed: {disk}; free some space (or raise the "
                  "quota) and rerun the same command to resume", file=sys.stderr)
            return 74
        print(f"spinal_bidsapp: unexpected error: {exc.__class__.__name__}: "
              f"{one_line(str(exc))} (the traceback is in OUTPUT_DIR/logs; please report it)",
              file=sys.stderr)
        return 1


def _permission_error(exc: BaseException) -> str | None:
    """The path of a permission error behind ``exc`` (an output folder made read-only)."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, PermissionError):
            return str(cause.filename or "a file")
        cause = cause.__cause__ or cause.__context__
    return None


def _disk_error(exc: BaseException) -> str | None:
    """The no-space / file-too-large cause of ``exc``, if any (also SQLite's "disk I/O error"
    from the BIDS index, which hides the errno)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT,
                                                          errno.EFBIG):
            return f"{cause.strerror}" + (f" ({cause.filename})" if cause.filename else "")
        if "disk I/O error" in str(cause) or "database or disk is full" in str(cause):
            return "disk I/O error while writing the BIDS index (no space left on device?)"
        cause = cause.__cause__ or cause.__context__
    return None


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
