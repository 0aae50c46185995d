"""segwatch daemon: configuration, ledger, reconciliation, store, CLI."""

__version__ = "0.1.0"
