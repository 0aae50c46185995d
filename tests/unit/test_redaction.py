"""Secrets in URLs never reach logs or output."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from chains.urls import redact_url
from daemon.logs import redact, redact_text


def test_redact_url_masks_credentials_query_and_key_paths() -> None:
    """User info, query strings and key-like path segments are masked; the host stays."""
    url = "https://user:pa55@eth-mainnet.example.io/v2/AbCdEfGhIjKlMnOpQrStUv123?apikey=s3cr3t"
    redacted = redact_url(url)
    assert redacted == "https://***@eth-mainnet.example.io/v2/***?***"
    for secret in ("pa55", "user", "AbCdEfGhIjKlMnOpQrStUv123", "s3cr3t"):
        assert secret not in redacted


def test_redact_text_finds_urls_inside_messages() -> None:
    """A URL embedded in an error message is redacted in place."""
    text = "failed to reach http://ops:hunter2@10.0.0.1:8545/ after 3 tries"
    assert redact_text(text) == "failed to reach http://***@10.0.0.1:8545/ after 3 tries"


def test_log_processor_redacts_urls_and_secret_keys() -> None:
    """The structlog redaction processor masks URL secrets and secret-named fields."""
    structlog.configure(processors=[redact, structlog.testing.LogCapture()])
    with capture_logs(processors=[redact]) as logs:
        structlog.get_logger().info("cycle", source="https://a:b@x.example/rpc?token=zz",
                                    api_key="k-123")
    (entry,) = logs
    assert entry["source"] == "https://***@x.example/rpc?***"
    assert entry["api_key"] == "***"
