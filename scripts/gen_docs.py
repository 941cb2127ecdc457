"""Render the generated parts of ``docs/``: the pool file's key tables, the store schema.

The pool tables come from the pydantic classes of the pool file
(:class:`slm_mux.pool.Pool` and every class its fields hold: the defaults, each
backend's model entry and the tables nested in them), from each field's type,
default and ``description``; the schema is read from a new, empty store. Each is
written between marker comments in its document::

    <!-- generated: defaults -->
    ...
    <!-- end generated -->

``python scripts/gen_docs.py`` rewrites them; ``--check`` only says whether the
documents are up to date (exit status 1 when one is stale), as ``tests/test_docs.py``
does.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import sys
import tempfile
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from slm_mux.pool import Pool
from slm_mux.store import Store
from slm_mux.tables import markdown_cell, markdown_table

DOCS = Path(__file__).resolve().parents[1] / "docs"
POOL_DOC = DOCS / "pool-file.md"
DATA_DOC = DOCS / "data-formats.md"

_MARKED = re.compile(
    r"(<!-- generated: (?P<name>[^>]+?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S
)
_TYPE_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _classes(annotation: Any) -> Iterator[type[BaseModel]]:
    """The pydantic model classes inside a field's annotation, in order of appearance."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in get_args(annotation):
        yield from _classes(arg)


def _type(annotation: Any) -> str:
    """A field's type in words: ``integer``, ``string or null``, ``list of string``..."""
    if annotation is type(None):
        return "null"
    if annotation in _TYPE_NAMES:
        return _TYPE_NAMES[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type(arg) for arg in args))
    if origin is list:
        item = _type(args[0])
        return f"list of ({item})" if " or " in item else f"list of {item}"
    if origin is dict:
        return "mapping"
    if origin is typing.Annotated:
        return _type(args[0])
    return str(annotation)


def _default(field: FieldInfo) -> str:
    """A field's default as written in a pool file (``required`` when it has none)."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        return f"`{value}`"
    if isinstance(value, dict) and not value:
        return "`{}`"
    return "(see below)"


def _table(model: type[BaseModel], keys: list[str]) -> str:
    """The ``keys`` of ``model`` as a Markdown table: key, type, default, meaning."""
    rows = []
    for key in keys:
        field = model.model_fields[key]
        rows.append(
            (
                f"`{key}`",
                _type(field.annotation),
                _default(field),
                markdown_cell(field.description or ""),
            )
        )
    return markdown_table(("key", "type", "default", "meaning"), rows)


def pool_tables() -> dict[str, str]:
    """Every generated table, by marker name.

    ``defaults``: the ``defaults`` keys; ``models``: the keys every model entry
    takes (those of the entry classes' common base); ``backend NAME``: the keys
    only that backend's entries take; and for every nested table, the key that
    holds it (``price``, ``base_urls``).
    """
    defaults = Pool.model_fields["defaults"].annotation
    assert isinstance(defaults, type) and issubclass(defaults, BaseModel)
    entries = list(_classes(Pool.model_fields["models"].annotation))
    base = next(c for c in entries[0].__mro__ if all(issubclass(e, c) for e in entries))
    assert issubclass(base, BaseModel)
    common = list(base.model_fields)
    tables = {
        "defaults": _table(defaults, list(defaults.model_fields)),
        "models": _table(base, common),
    }
    nested: dict[str, type[BaseModel]] = {}
    for entry in sorted(entries, key=_backend_name):
        own = [key for key in entry.model_fields if key not in common]
        tables[f"backend {_backend_name(entry)}"] = _table(entry, own)
        for key, field in entry.model_fields.items():
            for model in _classes(field.annotation):
                nested.setdefault(key, model)
    for key, model in nested.items():
        tables[key] = _table(model, list(model.model_fields))
    return tables


def _backend_name(entry: type[BaseModel]) -> str:
    """The value of an entry class's ``backend`` key."""
    (name,) = get_args(entry.model_fields["backend"].annotation)
    return str(name)


def render(text: str, tables: dict[str, str]) -> str:
    """``text`` with each marked block replaced by its table; an unknown marker, or a
    table that no marker asks for, is an error."""
    used: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in tables:
            raise SystemExit(f"gen_docs: unknown marker {name!r}; known: {', '.join(tables)}")
        used.add(name)
        return f"{match.group(1)}{tables[name]}{match.group(4)}"

    rendered = _MARKED.sub(replace, text)
    missing = [name for name in tables if name not in used]
    if missing:
        raise SystemExit(f"gen_docs: no marker for {', '.join(missing)}")
    return rendered


def store_schema() -> dict[str, str]:
    """``{"store schema": ...}``: the tables of a new store as one SQL block, with its version."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "schema.db"
        with Store(path):
            pass
        connection = sqlite3.connect(path)
        try:
            (version,) = connection.execute("SELECT version FROM schema_version").fetchone()
            statements = [
                _dedented(sql)
                for (sql,) in connection.execute(
                    "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
                )
            ]
        finally:
            connection.close()
    body = "\n\n".join(f"{sql};" for sql in statements)
    return {"store schema": f"```sql\n-- schema version {version}\n{body}\n```\n"}


def _dedented(sql: str) -> str:
    """A ``CREATE`` statement with its inner lines indented by four spaces."""
    lines = [line.strip() for line in sql.splitlines()]
    if len(lines) < 3:
        return " ".join(lines)
    return "\n".join([lines[0], *(f"    {line}" for line in lines[1:-1]), lines[-1]])


def generated() -> dict[Path, dict[str, str]]:
    """Each generated document and its blocks, by marker name."""
    return {POOL_DOC: pool_tables(), DATA_DOC: store_schema()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; 1 when stale")
    args = parser.parse_args(argv)
    stale = []
    for path, blocks in generated().items():
        text = path.read_text(encoding="utf-8")
        rendered = render(text, blocks)
        if rendered != text:
            stale.append(path)
            if not args.check:
                path.write_text(rendered, encoding="utf-8")
    if args.check and stale:
        names = ", ".join(str(path) for path in stale)
        print(f"stale: {names}; run python scripts/gen_docs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
