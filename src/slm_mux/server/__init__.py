"""An OpenAI-compatible server: SLM-MUX, each comparison method and each pool model as a model.

Needs the ``server`` extra (Starlette and uvicorn). :func:`create_app` builds the
ASGI app over a pool's members; :func:`serve` runs it with uvicorn on a socket
from :func:`listen`.
"""

from slm_mux.server.app import create_app
from slm_mux.server.protocol import ApiError, ChatRequest, parse_request
from slm_mux.server.run import listen, serve

__all__ = ["ApiError", "ChatRequest", "create_app", "listen", "parse_request", "serve"]
