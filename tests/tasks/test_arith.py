"""The arith task: generator, scratchpad, extractor, grader, and the bundled tiny models."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from slm_mux.errors import InputError
from slm_mux.tasks.arith import (
    MAX_OPERAND,
    PROBLEM_TYPES,
    ArithTask,
    evaluate,
    generate_questions,
    problem_type,
    random_expression,
    scratchpad,
    split_of,
)
from slm_mux.tasks.base import Question

POOL_DIR = Path(__file__).resolve().parents[2] / "src" / "slm_mux" / "pool_data"
MODEL_DIRS = sorted(p for p in POOL_DIR.glob("*") if (p / "config.json").is_file())

task = ArithTask()


def test_generator_is_deterministic_and_prefix_stable() -> None:
    first = generate_questions("test", 50, seed=3)
    assert first == generate_questions("test", 50, seed=3)
    assert generate_questions("test", 20, seed=3) == first[:20]
    assert first != generate_questions("test", 50, seed=4)


def test_splits_are_disjoint_and_never_train() -> None:
    validation = {q.text for q in generate_questions("validation", 600)}
    test = {q.text for q in generate_questions("test", 600)}
    assert len(validation) == len(test) == 600  # distinct within a split
    assert not validation & test
    assert {split_of(text) for text in validation} == {"validation"}
    assert {split_of(text) for text in test} == {"test"}


def test_ids_name_the_expression_whatever_the_seed() -> None:
    by_seed = [generate_questions("test", 300, seed=seed) for seed in (0, 1)]
    for questions in by_seed:
        assert [q.id for q in questions] == [f"arith-test-{q.text}" for q in questions]
        assert len({q.id for q in questions}) == 300
    ids = [{q.id: q for q in questions} for questions in by_seed]
    shared = ids[0].keys() & ids[1].keys()
    assert shared  # the two seeds draw some of the same expressions ...
    assert all(ids[0][i] == ids[1][i] for i in shared)  # ... under the same id
    assert [q.id for q in by_seed[0][:20]] != [q.id for q in by_seed[1][:20]]
    validation_ids = {q.id for q in generate_questions("validation", 300)}
    assert not validation_ids & ids[0].keys()


def test_questions_are_well_formed() -> None:
    questions = generate_questions("validation", 300, seed=1)
    counts = {kind: 0 for kind in PROBLEM_TYPES}
    for q in questions:
        counts[problem_type(q.text)] += 1
        assert q.reference == str(evaluate(q.text))
        assert int(q.reference) >= 0
        assert 1 <= sum(q.text.count(op) for op in "+-*") <= 2
    assert min(counts.values()) > 70  # roughly uniform over the three types


@pytest.mark.parametrize("kind", PROBLEM_TYPES)
def test_random_expression_respects_its_type(kind: str) -> None:
    rng = random.Random(0)
    for _ in range(500):
        expression = random_expression(rng, kind)  # type: ignore[arg-type]
        assert problem_type(expression) == kind
        steps = scratchpad(expression).split(" #### ")[0].split()
        assert all(int(step.split("=")[1]) >= 0 for step in steps)  # never below zero
        operands = [int(x) for x in expression.replace("*", "+").replace("-", "+").split("+")]
        assert max(operands) <= MAX_OPERAND


@pytest.mark.parametrize(
    ("expression", "kind", "value", "worked"),
    [
        ("47+38-12", "sub", 73, "47+38=85 85-12=73 #### 73"),
        ("3+4", "add", 7, "3+4=7 #### 7"),
        ("12+30+7", "add", 49, "12+30=42 42+7=49 #### 49"),
        ("40-15-25", "sub", 0, "40-15=25 25-25=0 #### 0"),
        ("23*7", "mul", 161, "23*7=161 #### 161"),
        ("23*7-5", "mul", 156, "23*7=161 161-5=156 #### 156"),
        ("6*4+26", "mul", 50, "6*4=24 24+26=50 #### 50"),
    ],
)
def test_scratchpad_table(expression: str, kind: str, value: int, worked: str) -> None:
    assert problem_type(expression) == kind
    assert evaluate(expression) == value
    assert scratchpad(expression) == worked
    assert task.extract(worked) == str(value)


@pytest.mark.parametrize("bad", ["", "4+", "4/2", "a+b", "4++2"])
def test_malformed_expression_is_an_input_error(bad: str) -> None:
    with pytest.raises(InputError, match="not an arith expression"):
        scratchpad(bad)


@pytest.mark.parametrize(("split", "n"), [("train", 3), ("test", -1), ("test", 5001)])
def test_bad_generator_arguments(split: str, n: int) -> None:
    with pytest.raises(InputError):
        generate_questions(split, n)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("47+38=85 85-12=73 #### 73", "73"),
        ("#### 5 and then #### 12", "12"),
        ("#### -4", "-4"),
        ("####   007\n", "007"),
        ("47+38=85", None),
        ("#### ", None),
        ("#### 7a", None),
        ("#### 1.5", None),
        ("", None),
    ],
)
def test_extract_table(text: str, answer: str | None) -> None:
    assert task.extract(text) == answer


@pytest.mark.parametrize(
    ("answer", "reference", "correct"),
    [
        ("73", "73", True),
        (" 007 ", "7", True),
        ("+5", "5", True),
        ("-0", "0", True),
        ("72", "73", False),
        ("-3", "3", False),
        ("seven", "7", False),
        (None, "7", False),
        ("", "0", False),
    ],
)
def test_grade_table(answer: str | None, reference: str, correct: bool) -> None:
    assert task.grade(answer, reference) is correct


def test_cluster_merges_equal_integers() -> None:
    assert task.cluster(["07", "7", "+7", "8", "x"]) == [0, 0, 0, 1, 2]


def test_messages_are_an_answer_format_hint_and_the_bare_expression() -> None:
    question = Question(id="arith-test-47+38-12", text="47+38-12", reference="73")
    system, user = task.messages(question)
    assert user == {"role": "user", "content": "47+38-12"}
    assert system["role"] == "system" and system["content"].startswith("Answer format:")
    assert "'#### <number>'" in system["content"]


def test_the_tiny_models_still_read_only_the_bare_expression() -> None:
    """Their template drops system turns; the backend folds none of an answer-format hint."""
    transformers = pytest.importorskip("transformers", reason="needs the local extra")
    from slm_mux.backends.transformers_local import _render_chat
    from slm_mux.demo import POOL_DIR

    tokenizer = transformers.AutoTokenizer.from_pretrained(POOL_DIR / "tiny-mul")
    question = Question(id="arith-test-47+38-12", text="47+38-12", reference="73")
    assert _render_chat(tokenizer, task.messages(question)) == "Q: 47+38-12\nA: "
    instructed = [{"role": "system", "content": "Check it."}, *task.messages(question)[1:]]
    assert _render_chat(tokenizer, instructed) == "Q: Check it.\n\n47+38-12\nA: "


needs_models = pytest.mark.skipif(
    not MODEL_DIRS or importlib.util.find_spec("transformers") is None,
    reason=f"needs trained models in {POOL_DIR} and the local extra (pip install 'slm-mux[local]')",
)


@needs_models
@pytest.mark.parametrize("model_dir", MODEL_DIRS, ids=lambda p: p.name)
def test_chat_template_renders_prompt(model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = task.messages(Question(id="q", text="47+38-12", reference="73"))
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered == "Q: 47+38-12\nA: "
    ids = tokenizer.encode(scratchpad("47+38-12"))
    assert tokenizer.decode(ids) == "47+38=85 85-12=73 #### 73"  # no spaces between characters
    assert tokenizer.padding_side == "left"


@needs_models
@pytest.mark.parametrize("model_dir", MODEL_DIRS, ids=lambda p: p.name)
def test_bundled_model_answers_in_format(model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    questions = generate_questions("test", 8)
    prompts = [
        tokenizer.apply_chat_template(task.messages(q), add_generation_prompt=True, tokenize=False)
        for q in questions
    ]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        output = model.generate(
            **batch, do_sample=False, max_new_tokens=40, pad_token_id=tokenizer.pad_token_id
        )
    texts = tokenizer.batch_decode(
        output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
    )
    answers = [task.extract(text) for text in texts]
    assert sum(answer is not None for answer in answers) >= 6, texts


@pytest.mark.parametrize(
    ("reply", "answer"),
    [  # SmolLM2-135M-Instruct's replies to the arith prompt (in process, temperature 0.3)
        ("12 + 7 = 8\n\nThe answer is 8.", "8"),
        ("23*4-5 = 12*2-12 = 12*2 = 24\n\nThe answer is 24.", "24"),
        ("23*4 - 5 = 11\n\nSo, the answer is 11.", "11"),
        ("12 + 7 = 8\n\nThis is the final answer.", "8"),
        ("The answer is 2.5 apples.", None),
        ("The answer is 3. #### 4", "4"),
        # a second in-process run (2026-12-05, after the answer-format hint)
        ("The result of 7 + 9 is 16.", "16"),
        ("The result is 152.", "152"),
        (
            "27 * 9\n\nThe result of 27 * 9 is 249, which is the result of 9 multiplied by 27.",
            "249",
        ),
        ("17", "17"),
        ("10 * 8 - 27", None),
        ("25.19\n\nThe answer is 25.19.", None),
        ("The expression 25*4+23 is a classic example of a mathematical formula", None),
        # and behind llama.cpp's server (chatml, temperature 0.3)
        ("19 + 26 = 35", "35"),
        ("0*3+1 = 2.\n```", "2"),
        ('27 * 9 = 243\nThe answer is "#### 18"', "18"),
        ("18.02\n```", None),
        ("19-20-4\n```", None),
        ("10 * 2 = 20.5", None),
    ],
)
def test_a_stated_answer_counts_when_the_format_was_skipped(reply: str, answer: str | None) -> None:
    assert task.extract(reply) == answer
