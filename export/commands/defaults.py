"""``python -m export defaults``: rebuild the default model set into models/ (``make models``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from export.commands import HelpFormatter
from export.commands.build import non_negative_int
from export.defaults import (
    DEFAULT_MODELS,
    DefaultsRecipe,
    build_defaults,
    default_names,
    present_names,
    select,
    write_models_readme,
)
from export.errors import Interrupted


def run(args: argparse.Namespace) -> int:
    recipe = DefaultsRecipe()
    models_dir: Path = args.models_dir
    if args.readme_only:
        path = write_models_readme(models_dir, present_names(models_dir, DEFAULT_MODELS, recipe))
        print(f"wrote {path}")
        return 0
    torch.set_num_threads(args.threads or recipe.threads)
    chosen = select(args.only or [], recipe)
    done: list[str] = []

    def log(line: str) -> None:
        print(line)
        done.append(line.removeprefix("published ").split(" (")[0])

    try:
        published = build_defaults(models_dir, chosen, recipe, progress=not args.quiet, log=log)
    except KeyboardInterrupt as exc:
        if not done:
            raise
        raise Interrupted(
            f"published {', '.join(done)}; the rest of the set was not built and "
            f"{models_dir / 'README.md'} was not updated"
        ) from exc
    total = sum(p.path.stat().st_size for p in published)
    print(
        f"built {len(published)} models into {models_dir} ({total / 1e6:.2f} MB); "
        f"see {models_dir / 'README.md'}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    recipe = DefaultsRecipe()
    parser = subparsers.add_parser(
        "defaults",
        help="rebuild the default model set into models/ (what `make models` runs)",
        description=f"Build the default models ({', '.join(default_names(DEFAULT_MODELS, recipe))}"
        f"): {recipe.arch} on {recipe.dataset} at {recipe.image_size}×{recipe.image_size}, "
        f"{recipe.epochs} epochs (sigmoid 30), seed {recipe.seed}, each exported, checked and "
        "published as its next version; then regenerate models/README.md (command, val "
        "accuracy, size and sha256 of every model).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="rebuild only this default model (repeatable; an -int8 name rebuilds its source too)",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=Path(os.environ.get("ACTLAB_MODELS_DIR", "models")),
        help="model repository (default: $ACTLAB_MODELS_DIR or models)",
    )
    parser.add_argument(
        "--readme-only",
        action="store_true",
        help="only regenerate models/README.md from the files already there",
    )
    parser.add_argument(
        "--threads",
        type=non_negative_int,
        default=0,
        help=f"torch threads (0 = the recipe's {recipe.threads}, which the shipped models were "
        "trained with: another count trains slightly different weights)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)
