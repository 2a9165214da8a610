"""``python -m export <command>``: build models, list the activation catalogue.

Each subcommand lives in its own module exposing ``register(subparsers)``; add one by appending
its ``register`` to ``COMMANDS``. Expected failures (bad names, unreadable files, failed checks)
exit with status 1 and a one-line ``error: …`` on stderr, never a traceback, and write nothing.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from export.commands import activations, build, defaults, quantize, sweep
from export.errors import ExportError
from export.weights import ActivationSwapWarning

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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = make_parser().parse_args(argv)
    args.argv = argv
    with warnings.catch_warnings():
        # A user-facing warning is one line on stderr, whatever filters the caller has set.
        warnings.simplefilter("always", ActivationSwapWarning)
        warnings.showwarning = _show_warning
        try:
            return int(args.func(args))
        except (ExportError, ValueError) as exc:  # CatalogueError and build_resnet's too
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("error: interrupted; nothing was published", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
