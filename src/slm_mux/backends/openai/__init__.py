"""The OpenAI-compatible backend: one client for every OpenAI-compatible chat server.

Its rooms:

* :mod:`.config` -- the pool-file entry (``backend: openai``); light to import.
* :mod:`.endpoints` -- per endpoint limits and the capability cache (``endpoints.json``).
* :mod:`.wire` -- the request body and defensive parsing of replies.
* :mod:`.client` -- :class:`~.client.OpenAICompatibleBackend`, the retrying client.
* :mod:`.http` -- HTTP on ``aiohttp``.
* :mod:`.replicas` -- routing over a model's replicas, cooldowns and backoff.

This package imports none of them, so ``import slm_mux.backends.openai.config``
does not load ``aiohttp``.
"""
