"""slm-mux: several small language models answer better together than any one alone.

The public surface: the selection rule (:func:`select`, :func:`decide`), the
live :class:`Mux` and its :class:`Answer`, the :class:`Store` of samples, tasks by name
(:func:`get_task`) and the error hierarchy (:class:`SlmMuxError`).
"""

from slm_mux.engine import Answer, Mux, MuxAnswer
from slm_mux.errors import BackendError, FormatError, InputError, SlmMuxError, StoreError
from slm_mux.members import Member
from slm_mux.sample import Sample
from slm_mux.selection import Decision, decide, select
from slm_mux.store import Store
from slm_mux.tasks import Question, Task, get_task, task_names

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "BackendError",
    "Decision",
    "FormatError",
    "InputError",
    "Member",
    "Mux",
    "MuxAnswer",
    "Question",
    "Sample",
    "SlmMuxError",
    "Store",
    "StoreError",
    "Task",
    "__version__",
    "decide",
    "get_task",
    "select",
    "task_names",
]
