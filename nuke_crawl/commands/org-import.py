"""``scrapy org-import FILE.csv``: add organizations from a CSV file.

Columns (header row required): ``website`` (required), and optionally
``name`` (or ``business_name``), ``type`` (or ``business_type``),
``inventory_url``, ``render_js``. One organization a line: a field cannot span
lines. A bad row (a website that is not a URL, more fields than the header,
invalid UTF-8, a line over 128 KiB, a NUL byte, an unbalanced quote, a row the
database refuses) is reported with its line number and reason on stderr and
skipped; the good rows are imported; the exit code is 1 when any row was skipped.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from typing import BinaryIO

from scrapy.exceptions import UsageError

from nuke_crawl.cli.base import DatabaseCommand, organization_metadata
from nuke_crawl.db import DatabaseError, store
from nuke_crawl.params import ArgumentError, to_bool, to_url

MAX_LINE_BYTES = 128 * 1024


class BadRow(ValueError):
    """A row that cannot be imported; the message is the reason."""


def _fields(text: str) -> list[str]:
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        reason = "unbalanced quote" if "unexpected end of data" in str(exc) else str(exc)
        raise BadRow(f"malformed CSV ({reason})") from None
    return rows[0] if rows else []


def read_header(handle: BinaryIO) -> list[str]:
    """The column names; ValueError when the header is unreadable or has no ``website``."""
    try:
        header = [
            f.strip().lower() for f in _fields(handle.readline().decode("utf-8-sig").rstrip("\r\n"))
        ]
    except (UnicodeDecodeError, BadRow) as exc:
        raise ValueError(f"the header line cannot be read: {exc}") from None
    if "website" not in header:
        raise ValueError("no 'website' column in the header")
    return header


def read_rows(handle: BinaryIO, header: list[str]) -> Iterator[tuple[int, dict[str, str] | BadRow]]:
    """(line number, row or why it is bad) for each non-empty line after the header."""
    for number, raw in enumerate(handle, start=2):
        if not raw.strip():
            continue
        if len(raw) > MAX_LINE_BYTES:
            yield number, BadRow(f"line longer than {MAX_LINE_BYTES // 1024} KiB")
            continue
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            yield number, BadRow(f"invalid UTF-8 (byte {exc.start + 1} of the line)")
            continue
        if "\x00" in text:
            yield number, BadRow("a NUL byte")
            continue
        try:
            values = _fields(text)
        except BadRow as exc:
            yield number, exc
            continue
        if len(values) > len(header):
            yield number, BadRow(f"{len(values)} fields, the header has {len(header)}")
            continue
        yield number, {k: v.strip() for k, v in zip(header, values, strict=False)}


class Command(DatabaseCommand):
    def syntax(self) -> str:
        return "FILE.csv"

    def short_desc(self) -> str:
        return "Import organizations from a CSV file (website,name,type,inventory_url,render_js)"

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give exactly one CSV file")
        try:
            handle = open(args[0], "rb")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"cannot read {args[0]}: {exc.strerror}", print_help=False) from None
        added = existing = bad = 0
        db = self.open_database()
        try:
            with handle:
                try:
                    header = read_header(handle)
                except ValueError as exc:
                    raise UsageError(f"{args[0]}: {exc}", print_help=False) from None
                for number, row in read_rows(handle, header):
                    try:
                        if isinstance(row, BadRow):
                            raise row
                        website = to_url("website", row.get("website", ""))
                        inventory = row.get("inventory_url")
                        inventory = to_url("inventory_url", inventory) if inventory else None
                        render = row.get("render_js")
                        render_js = to_bool("render_js", render) if render else None
                        _, created = store.add_organization(
                            db,
                            website,
                            name=row.get("name") or row.get("business_name") or None,
                            business_type=row.get("type") or row.get("business_type") or "dealer",
                            metadata=organization_metadata(inventory, render_js),
                        )
                    except (BadRow, ArgumentError, DatabaseError) as exc:
                        bad += 1
                        print(f"line {number}: skipped: {exc}", file=sys.stderr)
                        continue
                    added += created
                    existing += not created
        finally:
            db.close()
        print(f"imported {added} new, {existing} already present, {bad} skipped")
        if bad:
            self.exitcode = 1
