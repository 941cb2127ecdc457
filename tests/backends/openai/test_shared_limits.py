"""A pool served by several processes: each takes its share of the servers' limits."""

from __future__ import annotations

from slm_mux.backends.openai.config import OpenAIConfig
from slm_mux.pool import pool_from_dict


def test_each_worker_gets_its_share_of_concurrency_and_rate() -> None:
    pool = pool_from_dict(
        {
            "models": [
                {
                    "name": "m",
                    "backend": "openai",
                    "model": "m",
                    "max_concurrency": 10,
                    "requests_per_minute": 60,
                    "base_urls": ["http://a/v1", {"url": "http://b/v1", "max_concurrency": 3}],
                },
                {"name": "s", "backend": "scripted", "script": {"*": ["Answer: 1"]}},
            ]
        },
        source="pool.yaml",
    )
    assert pool.shared_by(1) == pool
    shared = pool.shared_by(4)
    entry = shared.model("m")
    assert isinstance(entry, OpenAIConfig)
    assert entry.replicas() == [("http://a/v1", 2), ("http://b/v1", 1)]
    assert entry.requests_per_minute == 15
    assert shared.model("s") == pool.model("s")
    assert shared.model("m").settings_hash(shared.defaults) == pool.model("m").settings_hash(
        pool.defaults
    )
