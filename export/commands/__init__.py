"""CLI subcommands: each module exposes ``register(subparsers)`` (see export/__main__.py)."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" only where there is one fixed default the help does not already give.

    An option whose default depends on other flags is ``None`` and says so in its own words;
    argparse's "(default: None)" after that would contradict it.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)
