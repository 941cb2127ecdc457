"""Render the generated parts of ``docs/``: the pool file's key tables.

The tables come from the pydantic classes of the pool file (:class:`slm_mux.pool.Pool`
and every class its fields hold: the defaults, each backend's model entry and the
tables nested in them), from each field's type, default and ``description``. They
are written between marker comments in ``docs/pool-file.md``::

    <!-- generated: defaults -->
    ...
    <!-- end generated -->

``python scripts/gen_docs.py`` rewrites them; ``--check`` only says whether the file
is up to date (exit status 1 when it is stale), as ``tests/test_docs.py`` does.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from slm_mux.pool import Pool
from slm_mux.tables import markdown_cell, markdown_table

POOL_DOC = Path(__file__).resolve().parents[1] / "docs" / "pool-file.md"
"""The document whose marked tables this script writes."""

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
        return f"list of {_type(args[0])}"
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
    takes; ``backend NAME``: the keys only that backend's entries take; and for
    every nested table, the key that holds it (``price``, ``base_urls``).
    """
    defaults = Pool.model_fields["defaults"].annotation
    assert isinstance(defaults, type) and issubclass(defaults, BaseModel)
    entries = list(_classes(Pool.model_fields["models"].annotation))
    common = [key for key in entries[0].model_fields if all(key in e.model_fields for e in entries)]
    tables = {
        "defaults": _table(defaults, list(defaults.model_fields)),
        "models": _table(entries[0], common),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; 1 when stale")
    args = parser.parse_args(argv)
    text = POOL_DOC.read_text(encoding="utf-8")
    rendered = render(text, pool_tables())
    if rendered == text:
        return 0
    if args.check:
        print(f"{POOL_DOC} is stale: run python scripts/gen_docs.py", file=sys.stderr)
        return 1
    POOL_DOC.write_text(rendered, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
