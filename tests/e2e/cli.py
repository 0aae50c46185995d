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
             timeout: float = 120, input: str | None = None) -> Result:
    """Run `segwatch ARGS` in `cwd` (with `input` on standard input) and return its exit
    code and output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          input=input)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def signed_up(cwd: Path, users: dict[str, list[str]], admin: str = "root") -> dict[str, str]:
    """Through the real CLI: bootstrap `admin` with a password on a store without users,
    let it create a token for itself, add `users` with their roles and a token each;
    return every user's token (the admin's included)."""
    password = "correct horse battery staple"
    added = segwatch("users", "add", admin, "--role", "admin", "--password-stdin", cwd=cwd,
                     input=password + "\n")
    assert added.code == 0, added.stderr
    own = segwatch("tokens", "create", "--user", admin, "--password-stdin", "--json", cwd=cwd,
                   input=password + "\n")
    assert own.code == 0, own.stderr
    tokens = {admin: own.json()["token"]}
    env = {"SEGWATCH_TOKEN": tokens[admin]}
    for name, roles in users.items():
        roles_args = [arg for role in roles for arg in ("--role", role)]
        made = segwatch("users", "add", name, *roles_args, cwd=cwd, env=env)
        assert made.code == 0, made.stderr
        token = segwatch("tokens", "create", "--user", name, "--json", cwd=cwd, env=env)
        assert token.code == 0, token.stderr
        tokens[name] = token.json()["token"]
    return tokens


def feeder_env(cwd: Path, config: str = "segwatch.toml",
               env: dict[str, str] | None = None) -> dict[str, str]:
    """{"SEGWATCH_TOKEN": a feeder's token} (see `token_env`)."""
    return token_env(cwd, "feeder", config, env)


def token_env(cwd: Path, role: str, config: str = "segwatch.toml",
              env: dict[str, str] | None = None) -> dict[str, str]:
    """{"SEGWATCH_TOKEN": a token with `role`} for the store of `cwd/config` (created and
    migrated if need be; the user `ROLE-user` is added on first use; `env`: the
    variables the configuration reads), for tests whose subject is not identity but
    must import, or export, through the CLI."""
    from datetime import UTC, datetime
    from unittest import mock

    from sqlalchemy.engine import make_url

    from daemon.inputs.config import load_settings
    from daemon.store.db import make_engine, upgrade
    from daemon.store.identity import Identities

    with mock.patch.dict(os.environ, env or {}):  # the variables the configuration names
        url = make_url(load_settings(cwd / config).store.url)
    if url.drivername.startswith("sqlite") and url.database and \
            not Path(url.database).is_absolute():
        url = url.set(database=str(cwd / url.database))
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        upgrade(engine)
        identities = Identities(engine)
        now = datetime.now(UTC)
        name = f"{role}-user"
        if name not in {u.name for u in identities.users()}:
            identities.add_user(name, [role], None, "local", "test", now)
        return {"SEGWATCH_TOKEN": identities.create_token(name, None, None, "test", now)[1]}
    finally:
        engine.dispose()
