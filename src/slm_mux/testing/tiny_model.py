"""A tiny random-weight chat model, built on the spot for tests (needs the ``local`` extra).

The tokenizer is character-level (printable ASCII plus a few special tokens)
and has a chat template; the model is a two-layer Llama with random weights,
so it generates gibberish — quickly, and reproducibly for a given seed.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL_TOKENS = (
    "<pad>",
    "<unk>",
    "<s>",
    "</s>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_model(
    directory: Path,
    *,
    seed: int = 0,
    chat_template: bool | str = True,
    max_position_embeddings: int = 1024,
) -> Path:
    """Save a tiny Llama model and its tokenizer to ``directory``; returns ``directory``.

    The result loads with ``AutoModelForCausalLM`` / ``AutoTokenizer``; the
    tokenizer adds ``<s>`` when asked for special tokens. Without
    ``chat_template`` it has no chat template (to test the plain fallback);
    a string is used as the template instead of the default one.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *sorted(set(string.printable))])}
    # BPE without merges splits text into single characters.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.add_special_tokens(list(SPECIAL_TOKENS))
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        chat_template=(
            chat_template
            if isinstance(chat_template, str)
            else CHAT_TEMPLATE
            if chat_template
            else None
        ),
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
