"""Tiny models and tokenizers built offline, shared by the scoring tests.

A byte-level BPE trained on a small corpus (wrapped in PreTrainedTokenizerFast with a
chat template) whose merges can cross a prompt/response boundary, and a tiny seeded
LlamaForCausalLM; plus a naive per-sequence log-prob computation to check against.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from core.models.logprobs import Encoded

CHAT_TEMPLATE = (
    "<s>{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
WORDS = "the a cat dog sat on mat ran far away quick brown fox jumps over lazy river hill red blue".split()
BOUNDARY_WORD = "zorblat"


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE whose corpus makes 'zorb'+'lat' merge into one token across a boundary."""
    corpus = [" ".join(random.Random(i).choices(WORDS, k=12)) for i in range(300)]
    corpus += [f"{BOUNDARY_WORD} {BOUNDARY_WORD}{BOUNDARY_WORD}"] * 50 + ["zorb", "lat"] * 5
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>", "<|user|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(corpus, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", backend.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", chat_template=CHAT_TEMPLATE
    )


def build_llama(vocab_size: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        initializer_range=0.2, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1,
    )
    return LlamaForCausalLM(config).eval()


def naive_logprobs(model, encoded: Encoded) -> tuple[np.ndarray, np.ndarray]:
    """One sequence at a time, no padding, full logits, log_softmax, gather."""
    sums, counts = [], []
    with torch.no_grad():
        for prompt, response in zip(encoded.prompt_ids, encoded.response_ids):
            ids = torch.tensor([prompt + response])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            positions = range(max(len(prompt), 1), len(prompt) + len(response))
            sums.append(sum(logp[t - 1, ids[0, t]].item() for t in positions))
            counts.append(len(positions))
    return np.array(sums), np.array(counts, dtype=float)


def random_text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


def standard_items(n: int, seed: int = 1):
    rng = random.Random(seed)
    prompts = [random_text(rng, 1, 40) for _ in range(n)]
    responses = [" " + random_text(rng, 1, 30) for _ in range(n)]
    return prompts, responses


def conversational_items(n: int, seed: int = 2):
    rng = random.Random(seed)
    prompts = [[{"role": "user", "content": random_text(rng, 1, 30)}] for _ in range(n)]
    responses = [[{"role": "assistant", "content": random_text(rng, 1, 25)}] for _ in range(n)]
    return prompts, responses


def save_tiny_llama(folder):
    """A tiny Llama and its tokenizer saved in `folder` with save_pretrained; returns `folder`."""
    tokenizer = build_tokenizer()
    build_llama(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
