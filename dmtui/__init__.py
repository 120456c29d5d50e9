"""dmtui: the Textual app and the command line over the `core` engine."""

__version__ = "0.1.0"
