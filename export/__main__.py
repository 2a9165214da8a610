"""``python -m export <command>``: build models, list the activation catalogue.

Each subcommand lives in its own module exposing ``register(subparsers)``; add one by appending
its ``register`` to ``COMMANDS``. Expected failures (bad names, unreadable files, failed checks)
exit with status 1 and a one-line ``error: …`` on stderr, never a traceback, and write nothing.
Ctrl-C or SIGTERM exits with status 130 and says what was published before it, if anything. A
closed stdout (``python -m export activations --json | head``) ends the command quietly, like
other CLI tools.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

from export.commands import activations, build, defaults, quantize, sweep
from export.data import SkippedFilesWarning
from export.errors import ExportError, Interrupted
from export.weights import WeightsWarning

_EXTENSIONS = (quantize,)  # modules that add flags to `build` when imported

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    build.register,
    activations.register,
    sweep.register,
    defaults.register,
]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (plus a pointer to --help), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m export",
        description="Build ResNet classifiers with any activation, export them to ONNX with a "
        "model card, and publish them into the model repository.",
    )
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser
    )
    for register in COMMANDS:
        register(subparsers)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _raise_interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (docker stop, Kubernetes) ends the command the way Ctrl-C does: the staging
    directory of a publish in progress is removed and the message says what was published.
    The previous handler is restored afterwards (``main`` may be called in-process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = make_parser().parse_args(argv)
    args.argv = argv
    with warnings.catch_warnings(), _sigterm_as_interrupt():
        # A user-facing warning is one line on stderr, whatever filters the caller has set.
        warnings.simplefilter("always", WeightsWarning)
        warnings.simplefilter("always", SkippedFilesWarning)
        warnings.showwarning = _show_warning
        try:
            status = int(args.func(args))
            sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
            return status
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly; later flushes of stdout go nowhere.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + signal.SIGPIPE
        except (ExportError, ValueError) as exc:  # CatalogueError and build_resnet's too
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except Interrupted as exc:
            print(f"error: interrupted; {exc}", file=sys.stderr)
            return 130
        except KeyboardInterrupt:
            print("error: interrupted; nothing was published", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
