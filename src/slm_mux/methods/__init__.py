"""SLM-MUX, its baselines and the discussion methods it is compared against.

Every method is registered in :mod:`slm_mux.methods.registry` (importing this package
registers the built-in ones). The votes over independent samples live in
:mod:`slm_mux.methods.votes`; the discussion methods, each with its settings dataclass
and cost formula (calls per question, ``M`` pool models, a server that honours ``n``):

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

from slm_mux.methods import votes
from slm_mux.methods.base import (
    Call,
    Caller,
    Method,
    MethodOutcome,
    Settings,
    call_all,
    first_round_majority,
    pool_model,
    vote,
)
from slm_mux.methods.debate import DebateSettings, debate, debate_calls
from slm_mux.methods.mav import MAVSettings, approves, mav, mav_calls
from slm_mux.methods.moa import MoASettings, moa, moa_calls
from slm_mux.methods.registry import (
    REGISTRY,
    Ballot,
    MethodSpec,
    Vote,
    compare_methods,
    discussion_methods,
    get_method,
    live_methods,
    method,
    offline_methods,
    sampled_live_methods,
    shared_methods,
)

METHODS: dict[str, MethodSpec] = discussion_methods()
"""The discussion methods by name (a view of the registry)."""


__all__ = [
    "METHODS",
    "REGISTRY",
    "Ballot",
    "Call",
    "Caller",
    "DebateSettings",
    "MAVSettings",
    "Method",
    "MethodOutcome",
    "MethodSpec",
    "MoASettings",
    "Settings",
    "Vote",
    "approves",
    "call_all",
    "compare_methods",
    "debate",
    "debate_calls",
    "discussion_methods",
    "first_round_majority",
    "get_method",
    "live_methods",
    "mav",
    "mav_calls",
    "method",
    "moa",
    "moa_calls",
    "offline_methods",
    "pool_model",
    "sampled_live_methods",
    "shared_methods",
    "vote",
    "votes",
]
