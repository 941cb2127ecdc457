"""Stop sequences: replies cut before the first one, answers extracted from the cut text."""

from __future__ import annotations

from typing import Any

import openai

from slm_mux.backends.scripted import Script
from slm_mux.server.stops import cut

from .helpers import Serve, scripted_pool

QUESTION = [{"role": "user", "content": "What is 2+2?"}]

# alpha answers only after the stop sequence, beta before it.
SCRIPT: dict[str, Script] = {
    "alpha": {"*": ["Let me see.\n\nQuestion: Answer: 5"]},
    "beta": {"*": ["Answer: 4\n\nQuestion: Answer: 6"]},
}


def test_cut_stops_at_the_earliest_sequence() -> None:
    assert cut("a.b;c", (";", ".")) == "a"
    assert cut("abc", ("x",)) == "abc"
    assert cut("abc", ()) == "abc"


def test_stop_cuts_the_reply_and_each_sample_before_the_vote(serve: Serve) -> None:
    with serve(scripted_pool(SCRIPT)) as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
        stopped = client.chat.completions.create(
            model="slm-mux",
            messages=QUESTION,  # type: ignore[arg-type]
            stop=["\n\nQuestion:"],
        )
        whole = client.chat.completions.create(model="slm-mux", messages=QUESTION)  # type: ignore[arg-type]
        alone = client.chat.completions.create(
            model="alpha",
            messages=QUESTION,  # type: ignore[arg-type]
            stop="\n\n",
            stream=True,
        )
        events: list[Any] = list(alone)
        streamed = "".join(
            event.choices[0].delta.content or "" for event in events if event.choices
        )
    assert stopped.choices[0].message.content == "Answer: 4"
    assert stopped.model_extra is not None and whole.model_extra is not None
    assert stopped.model_extra["slm_mux"]["votes"]["alpha"] == {"Let me see.": 3}
    assert whole.model_extra["slm_mux"]["votes"]["alpha"] == {"Question: Answer: 5": 3}
    assert (whole.choices[0].message.content or "").startswith("Answer: 4\n\nQuestion:")
    assert streamed == "Let me see."
