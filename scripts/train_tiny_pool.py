"""Train the bundled offline pool: tiny Llama models that solve ``arith`` problems.

Each model is a ~0.86M-parameter ``LlamaForCausalLM`` over a character
tokenizer, trained on CPU to write a scratchpad answer
(``47+38=85 85-12=73 #### 73``). Specialists see mostly one problem type, the
generalist sees all types but gets a short budget, so no model is strong alone
while together they cover every type: what SLM-MUX needs to shine.

Budgets are optimizer steps, and every random draw is seeded, so a rerun gives
the same models. After training (or with ``--evaluate-only``) the script
samples each saved model at T=0.3 on held-out questions, scores the samples
with ``slm_mux.analysis`` (per-model accuracy and self-consistency, Agent
Forest, SLM-MUX, oracle, the subset search) and records the results in
``training.json`` beside the models.

Run the full pool (about 20 minutes on two cores)::

    nice -n 10 python scripts/train_tiny_pool.py --jobs 2

A smoke run: ``--steps-scale 0.05 --questions 20 --out /tmp/pool``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tokenizers
import torch
import transformers
from tokenizers import Regex, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    get_cosine_schedule_with_warmup,
)

from slm_mux.analysis import (
    SampleArrays,
    evaluate,
    search,
    validation_accuracy,
    with_test_accuracy,
)
from slm_mux.sample import SPLITS, Sample, Split
from slm_mux.tasks.arith import (
    PROBLEM_TYPES,
    ArithTask,
    ProblemType,
    generate_questions,
    problem_type,
    random_expression,
    scratchpad,
    split_of,
)
from slm_mux.tasks.base import Question

transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "slm_mux" / "pool_data"

SPECIAL_TOKENS = ("<pad>", "<unk>", "<eos>")
CHARACTERS = "0123456789+-*=# QA:\n"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}Q: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}A: {{ message['content'] }}<eos>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}A: {% endif %}"
)

ARCHITECTURE: dict[str, Any] = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 384,
    "max_position_embeddings": 128,
}
LEARNING_RATE = 3e-3
WARMUP_STEPS = 100
BATCH_SIZE = 16
BLOCK_SIZE = 64
MAX_NEW_TOKENS = 40


@dataclass(frozen=True)
class ModelSpec:
    """One pool member: its training mix (share per problem type), budget and seed."""

    name: str
    mix: dict[ProblemType, float]
    steps: int
    seed: int


def specialist_mix(focus: ProblemType, share: float = 0.8) -> dict[ProblemType, float]:
    """``share`` of the data on ``focus``, the rest spread uniformly over all types."""
    rest = (1.0 - share) / len(PROBLEM_TYPES)
    return {kind: rest + (share if kind == focus else 0.0) for kind in PROBLEM_TYPES}


UNIFORM_MIX: dict[ProblemType, float] = {kind: 1.0 / len(PROBLEM_TYPES) for kind in PROBLEM_TYPES}

POOL = (
    ModelSpec("tiny-add", specialist_mix("add"), steps=4000, seed=11),
    ModelSpec("tiny-sub", specialist_mix("sub"), steps=4000, seed=12),
    ModelSpec("tiny-mul", specialist_mix("mul"), steps=6000, seed=13),
    ModelSpec("tiny-generalist", UNIFORM_MIX, steps=1600, seed=14),
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character tokenizer with the ``Q: ...\\nA: `` chat template, padding on the left."""
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *CHARACTERS])}
    core = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()  # join characters back without spaces
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<eos>",
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A fresh tiny Llama with tied embeddings (initialised from torch's current seed)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **ARCHITECTURE,
    )
    return LlamaForCausalLM(config)


def prompt_parts(tokenizer: PreTrainedTokenizerFast) -> tuple[str, str]:
    """The chat template's text before and after a user message."""
    marker = "\x00"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": marker}], add_generation_prompt=True, tokenize=False
    )
    before, after = str(rendered).split(marker)
    return before, after


def training_batch(
    rng: random.Random,
    mix: dict[ProblemType, float],
    tokenizer: PreTrainedTokenizerFast,
    parts: tuple[str, str],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``BATCH_SIZE`` rows of ``BLOCK_SIZE`` tokens, whole examples packed, padded at the end.

    Labels cover only the answer (scratchpad and end-of-sequence); expressions of
    the validation and test splits are never drawn.
    """
    kinds = list(mix)
    weights = [mix[kind] for kind in kinds]
    pad = int(tokenizer.pad_token_id)
    inputs = torch.full((BATCH_SIZE, BLOCK_SIZE), pad, dtype=torch.long)
    labels = torch.full((BATCH_SIZE, BLOCK_SIZE), -100, dtype=torch.long)
    for row in range(BATCH_SIZE):
        filled = 0
        while True:
            expression = random_expression(rng, rng.choices(kinds, weights)[0])
            if split_of(expression) != "train":
                continue
            prompt = tokenizer.encode(f"{parts[0]}{expression}{parts[1]}")
            answer = [*tokenizer.encode(scratchpad(expression)), int(tokenizer.eos_token_id)]
            length = len(prompt) + len(answer)
            if filled + length > BLOCK_SIZE:
                break  # the next row starts with a fresh example; this one is dropped
            inputs[row, filled : filled + length] = torch.tensor(prompt + answer)
            labels[row, filled + len(prompt) : filled + length] = torch.tensor(answer)
            filled += length
    return inputs, labels


def train_model(spec: ModelSpec, out: Path, steps_scale: float) -> dict[str, Any]:
    """Train one pool member, save it (fp16 safetensors) under ``out/<name>``, return its record."""
    torch.set_num_threads(1)
    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    steps = max(1, round(spec.steps * steps_scale))
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    parts = prompt_parts(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(WARMUP_STEPS, steps // 10), steps)
    model.train()
    started = time.monotonic()
    losses: list[float] = []
    for _ in range(steps):
        inputs, labels = training_batch(rng, spec.mix, tokenizer, parts)
        loss = model(input_ids=inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    seconds = time.monotonic() - started
    target = out / spec.name
    model.half().save_pretrained(target)  # type: ignore[no-untyped-call]
    # Stored in fp16 to stay small; computing in fp32 is what CPUs do well.
    config = json.loads((target / "config.json").read_text())
    config["dtype"] = "float32"
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save_pretrained(target)
    tail = losses[-min(100, len(losses)) :]
    return {
        **asdict(spec),
        "steps": steps,
        "seconds": round(seconds, 1),
        "params": sum(p.numel() for p in model.parameters()),
        "final_loss": round(sum(tail) / len(tail), 4),
    }


def sample_responses(
    model_dir: Path, questions: Sequence[Question], k: int, temperature: float, seed: int
) -> list[list[str]]:
    """``k`` sampled responses per question from the model saved in ``model_dir``."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    task = ArithTask()
    prompts = [
        str(
            tokenizer.apply_chat_template(
                task.messages(q), add_generation_prompt=True, tokenize=False
            )
        )
        for q in questions
    ]
    responses: list[list[str]] = []
    for start in range(0, len(prompts), 100):
        batch = tokenizer(prompts[start : start + 100], return_tensors="pt", padding=True)
        with torch.no_grad():
            output = model.generate(  # type: ignore[misc]
                **batch,
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                num_return_sequences=k,
                max_new_tokens=MAX_NEW_TOKENS,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        texts = tokenizer.batch_decode(
            output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
        )
        responses.extend(texts[i : i + k] for i in range(0, len(texts), k))
    return responses


def to_samples(
    name: str, split: Split, questions: Sequence[Question], responses: Sequence[Sequence[str]]
) -> list[Sample]:
    """One model's responses to ``questions`` as graded :class:`Sample` records."""
    task = ArithTask()
    samples = []
    for question, texts in zip(questions, responses, strict=True):
        for index, text in enumerate(texts):
            answer = task.extract(text)
            samples.append(
                Sample(
                    model=name,
                    task=task.name,
                    question_id=question.id,
                    split=split,
                    sample=index,
                    answer=answer,
                    reference=question.reference,
                    correct=task.grade(answer, question.reference),
                    text=text,
                )
            )
    return samples


def evaluate_pool(
    out: Path, names: Sequence[str], n_questions: int, k: int, temperature: float, jobs: int
) -> dict[str, Any]:
    """Sample every model on validation and test questions and score them with the package.

    The samples go through ``slm_mux.analysis``: every method is scored on all
    questions (``overall``) and on the questions of each problem type, with
    ties to overall validation sample accuracy; the subset search runs once.
    """
    splits = {split: generate_questions(split, n_questions) for split in SPLITS}
    runs = [(split, m, name) for split in SPLITS for m, name in enumerate(names)]
    work = [(out / name, splits[split], k, temperature, 1000 + m) for split, m, name in runs]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        sampled = pool.starmap(sample_responses, work)
    samples = [
        sample
        for (split, _, name), responses in zip(runs, sampled, strict=True)
        for sample in to_samples(name, split, splits[split], responses)
    ]
    kind_of = {q.id: problem_type(q.text) for questions in splits.values() for q in questions}
    scopes = {"overall": samples} | {
        kind: [s for s in samples if kind_of[s.question_id] == kind] for kind in PROBLEM_TYPES
    }
    arrays = {
        (split, scope): SampleArrays.from_samples(chosen, models=names, split=split)
        for scope, chosen in scopes.items()
        for split in SPLITS
    }
    accuracy = validation_accuracy(arrays["validation", "overall"])
    methods = {
        key: {
            str(method): score
            for method, score in evaluate(
                test, k=k, trials=1, seed=0, validation_accuracy=accuracy
            ).methods.items()
        }
        for key, test in arrays.items()
    }
    found = with_test_accuracy(
        search(arrays["validation", "overall"], k=k, max_models=len(names), lam=1.0),
        arrays["test", "overall"],
        k=k,
        trials=1,
        seed=0,
        validation_accuracy=accuracy,
    )

    def by_scope(split: Split, method: str) -> dict[str, float]:
        return {scope: methods[split, scope][method].accuracy for scope in scopes}

    def best_single_sc(split: Split, scope: str, models: Sequence[str]) -> float:
        return max(methods[split, scope][f"sc:{name}"].accuracy for name in models)

    models = {
        name: {
            split: {
                "sample_accuracy": by_scope(split, f"single:{name}"),
                "self_consistency": by_scope(split, f"sc:{name}"),
            }
            for split in SPLITS
        }
        for name in names
    }
    pool_methods = {
        split: {
            "slm_mux": by_scope(split, "slm-mux"),
            "agent_forest": by_scope(split, "agent-forest"),
            "oracle": by_scope(split, "oracle"),
            "best_single_sc": {scope: best_single_sc(split, scope, names) for scope in scopes},
        }
        for split in SPLITS
    }
    pair = found.best[2]
    test = pool_methods["test"]
    return {
        "temperature": temperature,
        "k": k,
        "questions_per_split": n_questions,
        "sampling_seeds": "1000 + model index, per split",
        "definitions": {
            "scoring": "slm_mux.analysis.evaluate with all k samples in sampled order (one trial)",
            "per_type": "each method scored again on only the questions of one problem type",
            "sample_accuracy": "mean accuracy of single samples (all k per question)",
            "self_consistency": "accuracy of the model's majority answer over its k samples",
            "agent_forest": "majority answer over all models' samples pooled",
            "slm_mux": "slm_mux.selection.select, ties to higher validation sample accuracy",
            "oracle": "some model's majority answer is correct",
            "best_single_sc": "the highest self_consistency of one model on the same questions",
            "search": "slm_mux.analysis.search on validation (objective UnionAcc - lambda * "
            "Contradiction, lambda 1), test_accuracy is SLM-MUX with the subset on test",
            "searched_pair": "the best subset of size 2 found by the search",
        },
        "models": models,
        "pool": pool_methods,
        "search": found.to_json(),
        "summary_test": {
            "best_single_sample_accuracy": max(
                models[name]["test"]["sample_accuracy"]["overall"] for name in names
            ),
            "best_single_sc": test["best_single_sc"]["overall"],
            "agent_forest": test["agent_forest"]["overall"],
            "slm_mux": test["slm_mux"]["overall"],
            "oracle": test["oracle"]["overall"],
            "searched_pair": list(pair.models),
            "searched_pair_slm_mux": pair.test_accuracy,
            "searched_pair_best_single_sc": best_single_sc("test", "overall", pair.models),
        },
    }


def settings() -> dict[str, Any]:
    """The fixed training settings, recorded beside the results."""
    return {
        "architecture": {"model": "LlamaForCausalLM", "tie_word_embeddings": True, **ARCHITECTURE},
        "tokenizer": "character-level WordLevel, chat template 'Q: <expression>\\nA: '",
        "optimizer": {"name": "AdamW", "lr": LEARNING_RATE, "weight_decay": 0.01, "clip": 1.0},
        "schedule": f"linear warm-up ({WARMUP_STEPS} steps) then cosine decay to 0",
        "batch_size": BATCH_SIZE,
        "block_size": BLOCK_SIZE,
        "packing": "whole examples, loss on answer tokens only",
        "saved_dtype": "float16 (config dtype float32: loaded and computed in fp32)",
        "threads_per_job": 1,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where models are saved")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply step budgets")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one thread each)")
    parser.add_argument("--evaluate-only", action="store_true", help="skip training")
    parser.add_argument("--questions", type=int, default=200, help="questions per split")
    parser.add_argument("--k", type=int, default=3, help="samples per model and question")
    parser.add_argument("--temperature", type=float, default=0.3)
    args = parser.parse_args(argv)

    record_path = args.out / "training.json"
    if args.evaluate_only:
        record = json.loads(record_path.read_text())
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        work = [(spec, args.out, args.steps_scale) for spec in POOL]
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            trained = pool.starmap(train_model, work, chunksize=1)
        record = {"settings": settings(), "models": {row["name"]: row for row in trained}}
        for row in trained:
            name, steps, seconds = row["name"], row["steps"], row["seconds"]
            print(f"{name}: {steps} steps in {seconds} s, final loss {row['final_loss']}")
    names = list(record["models"])
    record["evaluation"] = evaluate_pool(
        args.out, names, args.questions, args.k, args.temperature, args.jobs
    )
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["evaluation"]["summary_test"], indent=2))
    for name in names:
        accuracy = record["evaluation"]["models"][name]["test"]["sample_accuracy"]
        print(name, {key: round(value, 3) for key, value in accuracy.items()})


if __name__ == "__main__":
    main()
