"""Discussion-based orchestration methods that SLM-MUX is compared against.

``METHODS`` maps each name to its :class:`MethodSpec`: the async function, its settings
dataclass and its cost formula (calls per question, ``M`` pool models, a server that
honours ``n``):

=========  =======================================  ==================================
method     settings (defaults)                      calls per question
=========  =======================================  ==================================
debate     rounds = 2                               ``M * rounds``
moa        layers = 3, aggregator = first model     ``M * (layers - 1) + 1``
mav        candidates = 4, aspects = final-answer,  ``1 + M * candidates * len(aspects)``
           steps; generator = first model
=========  =======================================  ==================================
"""

from __future__ import annotations

from slm_mux.methods.base import (
    Call,
    Caller,
    Method,
    MethodOutcome,
    MethodSpec,
    Settings,
    call_all,
    first_round_majority,
    pool_model,
    vote,
)
from slm_mux.methods.debate import DebateSettings, debate, debate_calls
from slm_mux.methods.mav import MAVSettings, approves, mav, mav_calls
from slm_mux.methods.moa import MoASettings, moa, moa_calls

METHODS: dict[str, MethodSpec] = {
    "debate": MethodSpec("debate", debate, DebateSettings, debate_calls),
    "moa": MethodSpec("moa", moa, MoASettings, moa_calls),
    "mav": MethodSpec("mav", mav, MAVSettings, mav_calls),
}


def method_names() -> list[str]:
    """Names of the methods, in table order."""
    return list(METHODS)


__all__ = [
    "METHODS",
    "Call",
    "Caller",
    "DebateSettings",
    "MAVSettings",
    "Method",
    "MethodOutcome",
    "MethodSpec",
    "MoASettings",
    "Settings",
    "approves",
    "call_all",
    "debate",
    "first_round_majority",
    "mav",
    "method_names",
    "moa",
    "pool_model",
    "vote",
]
