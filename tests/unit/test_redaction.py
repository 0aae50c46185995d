"""Secrets in URLs, log values, exceptions and settings never reach logs or output."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from chains.urls import redact_url, url_secrets
from daemon.inputs.config import Settings
from daemon.runtime import logs
from daemon.runtime.logs import (
    MAX_DEPTH,
    clear_secrets,
    redact,
    redact_text,
    redact_value,
    register_secrets,
    settings_secrets,
)

KEYS = ("K8ab3xYz", "K12abcdefgh", "K16abcdefghijkl", "K32abcdefghijklmnopqrstuvwxyz012")


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> Iterator[None]:
    clear_secrets()
    yield
    clear_secrets()


def test_redact_url_keeps_only_scheme_host_and_port() -> None:
    """User info, every path segment, query and fragment are masked; the host stays."""
    url = "https://user:pa55@eth-mainnet.example.io:8443/v2/AbCd?apikey=s3cr3t#frag"
    assert redact_url(url) == "https://eth-mainnet.example.io:8443/***"
    assert redact_url("https://mainnet.infura.io/v3/SECRETKEY123") == \
        "https://mainnet.infura.io/***"
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert redact_url("http://127.0.0.1:8545/") == "http://127.0.0.1:8545/"
    assert redact_url("https://[::1]:8545/key") == "https://[::1]:8545/***"
    assert redact_url("https://:only-password@h.example") == "https://h.example/***"


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("template", [
    "https://h.example/v3/{k}", "https://h.example/{k}/", "https://h.example/{k}/rpc",
    "https://h.example/rpc?apikey={k}", "https://h.example/rpc?a=1&key={k}",
    "https://{k}@h.example/", "https://user:{k}@h.example/", "https://{k}:x@h.example/",
    "https://h.example/#{k}",
])
def test_no_key_of_any_length_survives_redaction(template: str, key: str) -> None:
    """Keys of 8, 12, 16 and 32 characters, wherever they sit in the URL, are gone."""
    url = template.format(k=key)
    assert key not in redact_url(url)
    assert key in url_secrets(url)
    assert key not in redact_text(f"error talking to {url}: boom")


def test_names_and_bare_hosts_pass_unchanged() -> None:
    """A source name or a migrated host is not a URL: nothing to hide."""
    assert redact_url("evm-1") == "evm-1"
    assert redact_url("mainnet.infura.io") == "mainnet.infura.io"
    assert redact_url("no scheme/with/path") == "<unparseable url>"


def test_url_secrets_covers_every_segment_query_value_and_userinfo() -> None:
    """Every non-empty path segment, each query value and the user info, also decoded."""
    secrets = url_secrets("https://u%40x:p%3Ass@h.example/a/bb?k=v1&q=v%202")
    for part in ("a", "bb", "v1", "v%202", "v 2", "u%40x", "u@x", "p%3Ass", "p:ss"):
        assert part in secrets


def test_redact_text_finds_urls_inside_messages() -> None:
    """A URL embedded in an error message is redacted in place."""
    text = "failed to reach http://ops:hunter2@10.0.0.1:8545/ after 3 tries"
    assert redact_text(text) == "failed to reach http://10.0.0.1:8545/*** after 3 tries"


def test_registered_secrets_are_masked_in_any_text() -> None:
    """A registered key is masked even where no URL surrounds it (a header value)."""
    register_secrets([KEYS[0], "abc", "main"])  # "abc" is too short to register
    assert redact_text(f"Bearer {KEYS[0]} refused") == "Bearer *** refused"
    assert redact_text(f"x{KEYS[0]}y") == "x***y"  # 8+: masked inside words too
    assert redact_text("abc main mainnet") == "abc *** mainnet"  # short: whole tokens only


def test_registry_is_bounded() -> None:
    """Huge or countless values do not grow the registry without bound."""
    register_secrets(["x" * (logs.MAX_SECRET_CHARS + 1)])
    assert logs.scrub_secrets("x" * 10) == "x" * 10
    register_secrets(f"secret-{i:06d}" for i in range(logs.MAX_SECRETS + 50))
    assert len(logs._registered) == logs.MAX_SECRETS


def test_log_processor_redacts_urls_and_secret_keys() -> None:
    """The structlog redaction processor masks URL secrets and secret-named fields."""
    structlog.configure(processors=[redact, structlog.testing.LogCapture()])
    with capture_logs(processors=[redact]) as logs_:
        structlog.get_logger().info("cycle", source="https://a:b@x.example/rpc?token=zz",
                                    api_key="k-123")
    (entry,) = logs_
    assert entry["source"] == "https://x.example/***"
    assert entry["api_key"] == "***"


def test_nested_values_are_redacted_at_any_depth() -> None:
    """Dicts, lists, tuples and sets inside an event are walked; secret keys masked."""
    register_secrets([KEYS[3]])
    url = f"https://h.example/v3/{KEYS[1]}"
    value = {"sources": [url, (url, {url}), {"deep": {"deeper": [f"key {KEYS[3]}"]}}],
             "headers": {"Authorization": "Bearer whatever", "X-Other": "fine"},
             "error": RuntimeError(f"cannot reach {url}")}
    redacted = redact_value(value)
    text = repr(redacted)
    for key in (KEYS[1], KEYS[3], "whatever"):
        assert key not in text
    assert redacted["headers"] == {"Authorization": "***", "X-Other": "fine"}
    assert redacted["error"] == "RuntimeError: cannot reach https://h.example/***"
    assert isinstance(redacted["sources"][1], tuple)


def test_nesting_and_size_are_bounded() -> None:
    """A self-referencing or very deep value ends in a marker; a huge list is cut."""
    loop: list[Any] = []
    loop.append(loop)
    redacted = redact_value(loop)
    for _ in range(MAX_DEPTH - 1):
        redacted = redacted[0]
    assert redacted == ["<nested too deep>"]
    big = redact_value(list(range(logs.MAX_ITEMS + 5)))
    assert len(big) == logs.MAX_ITEMS + 1 and big[-1] == "… 5 more"


def _capture_stderr(monkeypatch: pytest.MonkeyPatch, fmt: str) -> io.StringIO:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    logs.configure(fmt)
    return stream


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_exception_text_and_traceback_are_redacted(monkeypatch: pytest.MonkeyPatch,
                                                   fmt: str) -> None:
    """`log.exception` and `exc_info=` render a traceback whose text has no secret."""
    stream = _capture_stderr(monkeypatch, fmt)
    register_secrets([KEYS[2]])
    url = f"https://h.example/{KEYS[0]}?key={KEYS[1]}"
    try:
        raise ConnectionError(f"cannot reach {url} with header {KEYS[2]}")
    except ConnectionError:
        structlog.get_logger().exception("source failed", detail={"url": url})
    try:
        raise ValueError(KEYS[2])
    except ValueError as exc:
        structlog.get_logger().error("again", exc_info=exc)
    out = stream.getvalue()
    assert "ConnectionError" in out and "ValueError" in out and "Traceback" in out
    for key in KEYS[:3]:
        assert key not in out
    if fmt == "json":
        lines = [json.loads(line) for line in out.splitlines()]
        assert "https://h.example/***" in lines[0]["exception"]


def test_stdlib_logging_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Libraries' stdlib logging (httpx, SQLAlchemy, uvicorn) passes the same redaction,
    message, arguments and exception alike."""
    stream = _capture_stderr(monkeypatch, "json")
    register_secrets([KEYS[3]])
    url = f"https://user:{KEYS[0]}@h.example/{KEYS[1]}"
    log = logging.getLogger("some.library")
    log.warning("request to %s failed (%s)", url, KEYS[3])
    try:
        raise OSError(f"reset by {url}")
    except OSError:
        log.error("boom", exc_info=True)
    out = stream.getvalue()
    assert "h.example" in out and "OSError" in out
    for key in (KEYS[0], KEYS[1], KEYS[3]):
        assert key not in out


def test_secret_in_an_objects_repr_is_scrubbed_from_the_rendered_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An object the processor does not walk is still scrubbed once rendered."""
    stream = _capture_stderr(monkeypatch, "json")
    register_secrets([KEYS[2]])

    class Opaque:
        def __repr__(self) -> str:
            return f"<Opaque https://h.example/{KEYS[0]} {KEYS[2]}>"

    structlog.get_logger().info("opaque", value=Opaque())
    out = stream.getvalue()
    assert "Opaque" in out and KEYS[0] not in out and KEYS[2] not in out


def test_settings_secrets_lists_every_configured_secret(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """Source URL parts, header values, alert URL parts and secrets, the metrics token and
    the store password are registered; hosts and names are not."""
    monkeypatch.setenv("T_HDR", f"Bearer {KEYS[2]}")
    monkeypatch.setenv("T_SIG", KEYS[3])
    monkeypatch.setenv("T_METRICS", "metrics-token-123456")
    settings = Settings(
        chains=[{"name": "ethereum", "family": "evm", "chain_id": 1, "sources": [
            {"kind": "jsonrpc", "url": f"https://mainnet.example.io/v3/{KEYS[0]}"},
            {"kind": "jsonrpc", "url": f"https://u:{KEYS[1]}@b.example/?apikey=q{KEYS[1]}",
             "headers_env": {"Authorization": "T_HDR"}}]}],
        alerts=[{"kind": "webhook", "url": "https://hooks.example/T0/B0/xyzzy",
                 "secret_env": "T_SIG"}],
        daemon={"metrics_token_env": "T_METRICS"},
        store={"url": "postgresql://seg:dbpass99@db.example/segwatch"},
    )
    secrets = settings_secrets(settings)
    for expected in (KEYS[0], KEYS[1], f"q{KEYS[1]}", f"Bearer {KEYS[2]}", KEYS[2], KEYS[3],
                     "xyzzy", "metrics-token-123456", "dbpass99"):
        assert expected in secrets
    for public in ("mainnet", "ethereum", "jsonrpc-1", "segwatch", "b.example"):
        assert public not in secrets


def test_cli_error_lines_scrub_registered_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI's one-line errors on stderr pass the registry too, not only URL redaction."""
    from daemon.cli.app import _fail

    register_secrets([KEYS[1]])
    with pytest.raises(SystemExit) as exited:
        _fail([f"source refused header value {KEYS[1]} for https://h.example/{KEYS[0]}"], 3)
    assert exited.value.code == 3
    err = capsys.readouterr().err
    assert err == "segwatch: source refused header value *** for https://h.example/***\n"
