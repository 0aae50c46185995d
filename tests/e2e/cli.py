"""Run the real `segwatch` entry point in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def segwatch(*args: str, cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 120) -> Result:
    """Run `segwatch ARGS` in `cwd` and return its exit code and output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)
