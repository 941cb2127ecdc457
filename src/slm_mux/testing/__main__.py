"""``python -m slm_mux.testing``: serve the fake OpenAI-compatible server."""

from slm_mux.testing.fake_server import main

main()
