"""The ``slm-mux`` command: thin sub-commands over the library.

The sub-commands live by concern: :mod:`~slm_mux.cli.offline` (recorded samples),
:mod:`~slm_mux.cli.live` (the pool's models), :mod:`~slm_mux.cli.serve` and
:mod:`~slm_mux.cli.demo`; their shared flags in :mod:`~slm_mux.cli.flags`.

Every expected failure (bad file, unknown model, empty store, unwritable
folder, ...) ends in one ``slm-mux: error: ...`` line on stderr and exit
status 1, never a traceback; a malformed command line exits with 2 (argparse).
An unexpected ``OSError`` (no file named, not a full or failing disk) is a bug
and shows its traceback (:func:`edge_error`).
"""

from __future__ import annotations

import argparse
import errno
import os
import sqlite3
import sys
from collections.abc import Sequence

from slm_mux import __version__
from slm_mux.cli import demo, live, offline, serve
from slm_mux.cli.flags import Handler, HelpFormatter, Parser
from slm_mux.cli.output import printed_library_warnings
from slm_mux.errors import SlmMuxError

__all__ = ["build_parser", "edge_error", "main"]

MACHINE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})
"""``OSError`` numbers that mean the machine failed (disk full, read-only, I/O error),
wherever they surface: writing a result to a redirected stdout names no file."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command; it rejects every malformed flag value."""
    parser = Parser(
        prog="slm-mux",
        description="Orchestrate small language models with SLM-MUX (arXiv 2510.05077).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        sub.set_defaults(handler=handler)
        return sub

    offline.add_commands(add)
    live.add_commands(add)
    demo.add_commands(add)
    serve.add_commands(add)
    return parser


def edge_error(error: OSError) -> str | None:
    """The one-line message of an I/O failure at the command's edges, else ``None``.

    The edges are the files and folders the command reads or writes (the error
    names one: a user's file, the store's folder, the report folder) and a
    machine failing under it (:data:`MACHINE_ERRORS`). Sockets it listens on are
    reported by :func:`slm_mux.server.run.listen` itself. Any other ``OSError``
    (a bad file descriptor, a connection error escaping a backend, a timeout) is
    a bug, shown with its traceback.
    """
    if error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    if error.errno in MACHINE_ERRORS:
        return str(error.strerror or error)
    return None


def _fail(message: object) -> int:
    """Print ``message`` as one ``slm-mux: error:`` line; the exit status of a failure."""
    print("slm-mux: error: " + " ".join(str(message).splitlines()), file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    with printed_library_warnings():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command, turning its expected failures into one line."""
    handler: Handler = args.handler
    try:
        status = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly
        # Python flushes stdout again at exit; point it at /dev/null so that cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    except SlmMuxError as error:
        return _fail(error)
    except sqlite3.Error as error:  # the store broke under us (disk full, locked, damaged)
        return _fail(f"{getattr(args, 'store', 'store')}: {error}")
    except OSError as error:
        message = edge_error(error)
        if message is None:
            raise
        return _fail(message)
    except KeyboardInterrupt:
        print("slm-mux: interrupted", file=sys.stderr)
        return 130
