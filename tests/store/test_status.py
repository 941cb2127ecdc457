"""What a store holds, rendered by the status type: tables, Markdown and JSON."""

from __future__ import annotations

from pathlib import Path

from slm_mux.sample import Sample
from slm_mux.store import Store


def test_a_status_renders_its_tables_markdown_and_json(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        assert store.status().empty
        assert store.status().to_markdown() == ""
        store.add([Sample("m", "exact", "q1", "test", 0, "1", "1"),
                   Sample("m", "exact", "q2", "test", 0, None, "2")])  # fmt: skip
        store.record_failure("m", "exact", "q3", "test", "HTTP 500")
        store.save_replica_stats("m", [("http://a/v1", 4, 1, 0), ("http://b/v1", 3, 0, 0)])
        status = store.status()
    holdings, failures, servers = status.tables()
    assert holdings.title is None
    assert holdings.rows == [["exact", "test", "m", "2", "2", "1", "0.5000", "1"]]
    assert failures.rows == [["m", "exact", "test", "q3", "1", "HTTP 500"]]
    assert [row[:5] for row in servers.rows] == [
        ["m", "http://a/v1", "4", "1", "0"],
        ["m", "http://b/v1", "3", "0", "0"],
    ]
    text = status.to_markdown()
    assert text.startswith("| task | split | model |")
    assert "\nFailed questions (retried by the next collect):\n\n| model |" in text
    assert "\nServers per model (its latest collection):\n\n| model | server |" in text
    data = status.to_json()
    assert data["holdings"][0]["accuracy"] == 0.5
    assert data["failures"][0]["error"] == "HTTP 500"
    assert [r["url"] for r in data["replicas"]] == ["http://a/v1", "http://b/v1"]
