"""Reading tabular import files (CSV with a header, or JSON) into raw records.

Shared by the all-or-nothing imports (sub-ledger, approved withdrawals): this module
only reads; the importer validates each record's fields and reports every problem
with the record's location.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from daemon.errors import InputError


class Record(NamedTuple):
    """One raw input line: CSV line number (header = 1) or 1-based JSON item index. (A
    named tuple: a file of millions of lines builds one per line.)"""

    line: int
    is_item: bool
    fields: Mapping[str, object]
    problems: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        """"line N" or "item N", for messages that point at another line."""
        return f"{'item' if self.is_item else 'line'} {self.line}"

    def locate(self, path: Path) -> str:
        """The message prefix for this record: "PATH:N" or "PATH: item N"."""
        return f"{path}: item {self.line}" if self.is_item else f"{path}:{self.line}"


class JsonFloat(str):
    """The literal of a JSON float or NaN/Infinity, kept so it can be refused by name."""


def read_records(path: Path, columns: Iterable[str], required: Iterable[str], *,
                 wrapper: str, allow_empty: bool = False) -> Iterator[Record]:
    """Return the non-blank lines of a CSV (with header) or JSON file as records, one at
    a time (a CSV's lines are split as they are taken: a file of millions of lines is
    never held as millions of records).

    The format follows the extension (.csv, .json), else the first character. JSON
    is an array of objects, or an object whose only key `wrapper` holds that array.
    Raises InputError (one line) for an unreadable, empty, undecodable or malformed
    file, a missing or unknown column, or a file with no lines (unless `allow_empty`:
    then a header alone, `[]` or an empty wrapper is no records) before it returns; a
    CSV line that cannot be split raises it while the records are taken.
    """
    text = _read_text(path)
    is_json = path.suffix.lower() == ".json" or (
        path.suffix.lower() != ".csv" and text.lstrip()[:1] in ("[", "{"))
    columns, required = tuple(columns), tuple(required)
    records = (iter(_json_records(path, text, columns, wrapper)) if is_json
               else _csv_records(path, text, columns, required))
    first = next(records, None)
    if first is None:
        if not allow_empty:
            raise InputError(f"{path}: no lines to import")
        return iter(())
    return itertools.chain((first,), records)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (bad byte at offset {exc.start}); "
                         "expected CSV or JSON") from None
    if not text.strip():
        raise InputError(f"{path}: empty file")
    if "\x00" in text:
        raise InputError(f"{path}: binary file; expected CSV or JSON")
    return text


def _csv_records(path: Path, text: str, columns: tuple[str, ...],
                 required: tuple[str, ...]) -> Iterator[Record]:
    """The header checked now; the lines as they are taken."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [cell.strip().lower() for cell in next(reader)]
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None
    _check_header(path, header, columns, required)
    return _csv_lines(path, reader, header)


def _csv_lines(path: Path, reader: Any, header: list[str]) -> Iterator[Record]:
    start = reader.line_num + 1
    try:
        for cells in reader:
            if any(map(str.strip, cells)):  # not a blank line
                yield _csv_record(start, header, cells)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None


def _check_header(path: Path, header: list[str], columns: tuple[str, ...],
                  required: tuple[str, ...]) -> None:
    expected = f"header must be {','.join(columns)}"
    if not set(header) & set(columns):
        raise InputError(f"{path}:1: not a CSV file with a header row ({expected})")
    problems = [f"unknown column {name!r}" for name in header if name not in columns]
    problems += [f"duplicate column {name!r}" for name in sorted(set(header))
                 if header.count(name) > 1]
    problems += [f"missing column {name!r}" for name in required if name not in header]
    if problems:
        lines = [f"{path}:1: {problem} ({expected})"
                 for problem in problems]
        raise InputError(lines[0] if len(lines) == 1 else f"{path}:1: bad header", lines)


def _csv_record(line: int, header: list[str], cells: list[str]) -> Record:
    if len(cells) != len(header):
        return Record(line, False, {}, (f"{len(cells)} fields, the header has {len(header)}",))
    return Record(line, False, dict(zip(header, cells, strict=True)))


def _json_records(path: Path, text: str, columns: tuple[str, ...],
                  wrapper: str) -> list[Record]:
    try:
        data = json.loads(text, parse_float=JsonFloat, parse_constant=JsonFloat)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno} "
                         f"column {exc.colno})") from None
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise InputError(f"{path}: not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{path}: not valid JSON: nested too deeply") from None
    if isinstance(data, dict) and set(data) == {wrapper}:
        data = data[wrapper]
    if not isinstance(data, list):
        raise InputError(f'{path}: expected a JSON array of objects or {{"{wrapper}": [...]}}')
    return [_json_record(n, item, columns) for n, item in enumerate(data, start=1)]


def _json_record(number: int, item: object, columns: tuple[str, ...]) -> Record:
    if not isinstance(item, dict):
        return Record(number, True, {}, (f"expected an object, got {json_type(item)}",))
    unknown = [f"unknown key {key!r} (expected {', '.join(columns)})"
               for key in item if key not in columns]
    return Record(number, True, item, tuple(unknown))


def json_type(value: object) -> str:
    """A JSON-ish name for the type of `value`, for messages."""
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
             JsonFloat: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
