"""The names ``livecart.store.journal`` has always offered, for code written before the store was split.

New code imports from :mod:`livecart.store.codec` (entries, replay), :mod:`livecart.store.base` (the
:class:`Store` interface) and :mod:`livecart.store.sqlite` (the file).
"""

from __future__ import annotations

from livecart.core.control import Kind
from livecart.store.codec import (
    COMMENT,
    Entry,
    Header,
    Row,
    apply,
    apply_data,
    catalogue_from_json,
    catalogue_json,
    comment_row,
    control_row,
    rebuild,
    rebuild_entries,
)
from livecart.store.sqlite import APPLICATION_ID, SCHEMA_VERSION, SQLITE_MAGIC, SqliteStore

#: The SQLite store under its old name.
Journal = SqliteStore

__all__ = ["APPLICATION_ID", "COMMENT", "SCHEMA_VERSION", "Kind", "SQLITE_MAGIC", "Entry", "Header", "Journal", "Row", "SqliteStore", "apply",
           "apply_data", "catalogue_from_json", "catalogue_json", "comment_row", "control_row", "rebuild",
           "rebuild_entries"]
