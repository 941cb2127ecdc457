"""The wire format without a server: request checks and stream pieces."""

from __future__ import annotations

import orjson
import pytest

from slm_mux.server.protocol import PIECE_CHARS, ChatRequest, parse_request, pieces

MODELS = ["slm-mux", "agent-forest", "debate", "moa", "mav", "alpha"]


def test_a_full_request_is_read_into_its_settings() -> None:
    parts = [{"type": "text", "text": "2+"}, {"type": "text", "text": "2?"}]
    body = {
        "model": "slm-mux",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": parts, "name": "ann"},
        ],
        "temperature": 0,
        "max_completion_tokens": 9,
        "seed": 7,
        "k": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert parse_request(orjson.dumps(body), MODELS) == ChatRequest(
        model="slm-mux",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}],
        temperature=0.0,
        max_tokens=9,
        seed=7,
        k=4,
        n=1,
        stream=True,
        include_usage=True,
    )


@pytest.mark.parametrize(
    "text",
    ["", "Answer: 4", "word " * 50, "a\n\nb  c\t" * 20, "x" * 200 + " tail", "  lead and trail  "],
)
def test_pieces_rebuild_the_text_cut_at_word_ends(text: str) -> None:
    cut = pieces(text)
    assert "".join(cut) == text
    assert all(len(piece) <= PIECE_CHARS or len(piece.split()) == 1 for piece in cut)
    assert all(piece for piece in cut)
