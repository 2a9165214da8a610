"""``python -m export activations``: the activation catalogue, one line each."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from service.activations import CATALOGUE, NETWORK_ACTIVATIONS, Activation


def describe(activation: Activation) -> str:
    params = ", ".join(
        f"{p.name}={p.default!r} ({p.describe_allowed()})" for p in activation.params
    )
    notes = []
    if activation.name not in NETWORK_ACTIVATIONS:
        notes.append("output layer only")
    if not activation.trainable:
        notes.append("export/inference only, cannot be trained")
    if activation.aliases:
        notes.append("alias " + ", ".join(activation.aliases))
    suffix = f"  [{'; '.join(notes)}]" if notes else ""
    return (
        f"{activation.name:<12} {activation.formula}"
        + (f"  params: {params}" if params else "")
        + suffix
    )


def run(args: argparse.Namespace) -> int:
    if args.json:
        rows = [
            {
                "name": a.name,
                "formula": a.formula,
                "description": a.description,
                "kind": a.kind,
                "trainable": a.trainable,
                "network": a.name in NETWORK_ACTIVATIONS,
                "aliases": list(a.aliases),
                "params": [asdict(p) for p in a.params],
            }
            for a in CATALOGUE.values()
        ]
        print(json.dumps(rows, indent=2))
    else:
        for activation in CATALOGUE.values():
            print(describe(activation))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "activations",
        help="list the activation catalogue",
        description="List every activation in the catalogue: name, formula, parameters with "
        "defaults and allowed values, and notes (aliases, training limits).",
    )
    parser.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    parser.set_defaults(func=run)
