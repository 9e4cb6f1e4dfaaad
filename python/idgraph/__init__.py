"""idgraph: which visitor IDs are one person, stored durably.

The Rust store of the ``idgraph`` crate, in-process (no server, no CLI):

>>> import idgraph
>>> with idgraph.Store() as s:          # a temporary store; Store("path") keeps one on disk
...     _ = s.record("anon-1", "Viewed Pricing", at=100)
...     _ = s.alias("bob@example.com", "anon-1", at=160, cause="identify")
...     s.canonical("anon-1")
'bob@example.com'

- ``Store``: open a store; resolve, canonical, events, props, explain, links, hubs, stats,
  verify; alias, record, set, apply (a batch, atomically), import_files (what ``idgraph
  import`` runs), forget, flush; ``export_mapping()`` / ``export_events()`` as streaming
  ``pyarrow.RecordBatchReader``s (Polars, DuckDB and pandas read them as they are).
- ``parse_lines``: lines of KISSmetrics JSON in an Arrow batch, parsed by the importer's own
  code into ops and rejected lines (``FILE:LINE: reason``); ``parse_csv`` the same for a
  whole CSV file.
- ``local_stars``: the connected components of a batch of edges, as star edges (how the
  Spark job solves its links when they fit one task).
- Errors: ``IdgraphError`` and its kinds ``InputError``, ``LockedError``, ``CorruptError``,
  with the store's messages.
"""

from ._idgraph import (  # noqa: F401
    FORMAT_VERSION,
    MAX_LINE_BYTES,
    CorruptError,
    IdgraphError,
    InputError,
    LockedError,
    Store,
    __version__,
    local_stars,
    parse_csv,
    parse_lines,
)

__all__ = [
    "Store",
    "parse_csv",
    "parse_lines",
    "local_stars",
    "IdgraphError",
    "InputError",
    "LockedError",
    "CorruptError",
    "FORMAT_VERSION",
    "MAX_LINE_BYTES",
    "__version__",
]
