"""source names: stored source URLs (and URLs inside stored error texts) become hosts

Until now a source was stored as its URL with only long path segments masked, so a short
API key (`…/v3/SECRETKEY123`) sat in `balance_observation.source`, `checkpoint.source`,
a `source_disagreement` finding's `counterparty` and the error texts. A source is now
stored by its configured name; a migration cannot know those names, so every stored
URL is rewritten to its host alone (`mainnet.infura.io`), and every URL inside an error
text likewise. Values without `://` (names, addresses, hosts) are left alone, so running
it again changes nothing. Rows are read and written in batches, by primary key.

The downgrade changes nothing: the secrets are gone for good, which is the point.
The audit log is not touched (its entries are hash-chained, and none records a source).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BATCH = 1000
UNKNOWN = "unknown-source"

# (table, primary key, column): the whole value is a source URL
WHOLE = (
    ("balance_observation", "id", "source"),
    ("checkpoint", "id", "source"),
    ("discrepancy", "id", "counterparty"),
)
# (table, primary key, column): free text that may quote a source URL
TEXT = (
    ("balance_observation", "id", "error"),
    ("chain", "id", "last_error"),
    ("scan_cursor", "chain_id", "error"),
    ("alert_cursor", "sink", "last_error"),
)
# The same URL pattern the log redaction uses (daemon/runtime/logs.py), copied: a migration
# must not change when application code does.
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s\"'<>]+")


def host_of(url: str) -> str:
    """The host of `url`, or UNKNOWN when it has none."""
    try:
        return urlsplit(url.strip()).hostname or UNKNOWN
    except ValueError:
        return UNKNOWN


def hosts_in(text: str) -> str:
    """`text` with every URL in it replaced by its host (punctuation after it kept)."""
    def host(match: re.Match[str]) -> str:
        url = match.group(0)
        bare = url.rstrip(".,;:!?)]")
        return host_of(bare) + url[len(bare):]
    return _URL.sub(host, text)


def upgrade() -> None:
    connection = op.get_bind()
    for table, key, column in WHOLE:
        _rewrite(connection, table, key, column, host_of)
    for table, key, column in TEXT:
        _rewrite(connection, table, key, column, hosts_in)


def _rewrite(connection: sa.Connection, table: str, key: str, column: str,
             convert: Callable[[str], str]) -> None:
    """Rewrite `column` of each row whose value contains `://`, BATCH rows at a time in
    primary-key order (memory stays bounded on a table of millions of rows)."""
    t = sa.table(table, sa.column(key), sa.column(column))
    pk, value = t.c[key], t.c[column]
    update = sa.update(t).where(pk == sa.bindparam("_key")).values(
        {column: sa.bindparam("_value")})
    last: object = None
    while True:
        query = sa.select(pk, value).where(value.like("%://%")).order_by(pk).limit(BATCH)
        if last is not None:
            query = query.where(pk > last)
        rows = connection.execute(query).all()
        if not rows:
            return
        changes = [{"_key": row[0], "_value": convert(row[1])[:500]} for row in rows]
        connection.execute(update, changes)
        last = rows[-1][0]


def downgrade() -> None:
    """Nothing to undo: the URLs (and their secrets) are not kept anywhere."""
