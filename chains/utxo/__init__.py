"""UTXO chains (Bitcoin, Litecoin): address validation and, later, adapters.

bitcoinlib writes a configuration, a log file and a database directory into
`~/.bitcoinlib` the first time it is imported. Importing this package first points
it (through its `BCL_DATA_DIR` variable) at a private temporary directory that is
removed at exit, unless the operator set `BCL_DATA_DIR` already. Every module that
uses bitcoinlib lives in this package, so this runs before bitcoinlib's import.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile


def _isolate_bitcoinlib() -> None:
    """Give bitcoinlib a private data directory unless `BCL_DATA_DIR` is set."""
    if os.environ.get("BCL_DATA_DIR"):
        return
    data_dir = tempfile.mkdtemp(prefix="segwatch-bitcoinlib-")
    os.environ["BCL_DATA_DIR"] = data_dir
    atexit.register(shutil.rmtree, data_dir, ignore_errors=True)


_isolate_bitcoinlib()
