"""Headless subcommands. Each module defines ``register(subparsers)`` and a handler.

Modules import heavy libraries (torch, transformers, datasets) inside their handlers so
that ``dmtui --help`` stays instant.
"""
