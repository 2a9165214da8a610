"""CLI subcommands: each module exposes ``register(subparsers)`` (see export/__main__.py)."""
