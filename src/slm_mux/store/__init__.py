"""The sample store: one SQLite file (WAL mode) holding every sample ever collected.

The package's rooms:

- :mod:`~slm_mux.store.sqlite`: SQLite errors as one :class:`StoreError` line;
  the reader connection and the one writer thread (``await store.write(...)``);
- :mod:`~slm_mux.store.schema`: the tables and the numbered migrations;
- :mod:`~slm_mux.store.records`: the record types and sample rows;
- :mod:`~slm_mux.store.staging`: an import's staging area and its checks;
- :mod:`~slm_mux.store.merge`: a staged import written into a store;
- :mod:`~slm_mux.store.sources`: another store staged for a merge;
- :mod:`~slm_mux.store.calls`: the compare records (calls, method runs);
- :mod:`~slm_mux.store.status`: what a store holds, rendered by itself;
- :mod:`~slm_mux.store.core`: the :class:`Store` and its queries.

The store grades every sample it writes with a grader passed in (default:
the task's), and never grades inside a write transaction.
"""

from slm_mux.errors import StoreError
from slm_mux.store.calls import RECORD_TABLES, RecordTable
from slm_mux.store.core import Store
from slm_mux.store.records import (
    Failure,
    Grader,
    Holding,
    ImportReport,
    MethodRun,
    RecordedCall,
    ReplicaRecord,
    RunKey,
    default_grader,
    utc_now,
)
from slm_mux.store.schema import MIGRATIONS, SCHEMA_VERSION
from slm_mux.store.sources import SQLITE_HEADER, is_store_file, stage_store
from slm_mux.store.sqlite import BUSY_TIMEOUT_S
from slm_mux.store.staging import REQUIRED_COLUMNS, Staging
from slm_mux.store.status import StatusTable, StoreStatus

__all__ = [
    "BUSY_TIMEOUT_S",
    "MIGRATIONS",
    "RECORD_TABLES",
    "REQUIRED_COLUMNS",
    "SCHEMA_VERSION",
    "SQLITE_HEADER",
    "Failure",
    "Grader",
    "Holding",
    "ImportReport",
    "MethodRun",
    "RecordTable",
    "RecordedCall",
    "ReplicaRecord",
    "RunKey",
    "Staging",
    "StatusTable",
    "Store",
    "StoreError",
    "StoreStatus",
    "default_grader",
    "is_store_file",
    "stage_store",
    "utc_now",
]
