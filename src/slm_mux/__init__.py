"""slm-mux: several small language models answer better together than any one alone."""

from slm_mux.errors import SlmMuxError
from slm_mux.sample import Sample
from slm_mux.selection import Decision, decide, select

__version__ = "0.1.0"

__all__ = ["Decision", "Sample", "SlmMuxError", "__version__", "decide", "select"]
