"""Tokenizers of the families users bring, built offline with `tokenizers`, and a naive reference.

Each is trained on a small corpus in its family's style and wrapped the way transformers
ships that family, with the family's real chat template:

- ``llama3``: byte-level BPE with Llama-3's pre-tokenizer regex, ``<|begin_of_text|>``
  added as BOS, Llama-3-Instruct's template (``<|eot_id|>`` is EOS).
- ``chatml``: byte-level BPE with Qwen2's regex, no BOS, Qwen2-Instruct's ChatML template
  with its default system prompt (``<|im_end|>`` is EOS).
- ``sentencepiece``: SentencePiece-style BPE, Metaspace with a dummy prefix (transformers'
  ``LlamaTokenizer``, as Llama-2, Mistral-7B-v0.1, Zephyr and TinyLlama load; byte fallback),
  BOS added, Mistral-7B-Instruct-v0.1's ``[INST]`` template (the answer follows ``[/INST]``
  with no space, so a response tokenized alone gets a dummy-prefix piece it never has in
  the conversation).
- ``sentencepiece_eos``: the same with ``add_eos_token=True`` (EOS after every text).

`reference_encoding` is the naive joint tokenization the engine must reproduce, written
from the rules rather than from core.models.logprobs.
"""

from __future__ import annotations

import json
import random

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaTokenizer, PreTrainedTokenizerFast

FAMILIES = ("llama3", "chatml", "sentencepiece", "sentencepiece_eos")

LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
RENDERED_STARTS = ("<s>", "<|begin_of_text|>", "<|start_header_id|>", "<|im_start|>", "[INST]")
WORDS = ("the a cat dog sat on mat ran far away quick brown fox jumps over lazy river hill red blue "
         "how do I bake bread grow tomatoes water flour measure first plant seeds after last frost "
         "happy to help sure here is why because it's don't you're we'll, first, then, 42 2024").split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(3, 14))
        text = " ".join(words)
        lines.append(text[0].upper() + text[1:] + rng.choice([".", "?", "!", ":\n", "\n\n"]))
    lines += ["Human: " + lines[i] + "\n\nAssistant: " + lines[i + 1] for i in range(0, 100, 2)]
    lines += ["[INST] " + lines[i] + " [/INST] " + lines[i + 1] for i in range(100, 200, 2)]
    return lines


def _byte_level(regex: str, specials: list[str]) -> Tokenizer:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(corpus(), trainer)
    return backend


def llama3() -> PreTrainedTokenizerFast:
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    backend = _byte_level(LLAMA3_REGEX, specials)
    backend.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", backend.token_to_id("<|begin_of_text|>"))])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   pad_token="<|end_of_text|>", chat_template=LLAMA3_TEMPLATE)


def chatml() -> PreTrainedTokenizerFast:
    backend = _byte_level(QWEN2_REGEX, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=QWEN2_TEMPLATE)


def sentencepiece(add_eos_token: bool = False) -> LlamaTokenizer:
    """Llama-2-style: pieces never cross a word (trained split at ▁), ▁ prepended to the text."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=["<unk>", "<s>", "</s>", *byte_pieces])
    backend.train_from_iterator(corpus(), trainer)
    state = json.loads(backend.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = LlamaTokenizer(vocab=state["vocab"], merges=merges, legacy=True, add_bos_token=True,
                               add_eos_token=add_eos_token, chat_template=MISTRAL_TEMPLATE)
    # The byte pieces are ordinary vocabulary in SentencePiece models, not specials.
    return tokenizer


def build(family: str):
    if family == "llama3":
        return llama3()
    if family == "chatml":
        return chatml()
    if family == "sentencepiece":
        return sentencepiece()
    if family == "sentencepiece_eos":
        return sentencepiece(add_eos_token=True)
    raise ValueError(family)


def reference_encoding(tokenizer, prompt, response) -> tuple[list[int], list[int]]:
    """(context ids, response ids) by naive joint tokenization.

    Conversations: the chat template's token ids for the prompt with the generation prompt
    and for the whole conversation; the response is what the second adds. Standard text:
    BOS (when the tokenizer adds one) + the ids of prompt + response + EOS; the context is
    BOS + the ids of the prompt. Text that starts with a rendered template gets neither.
    """
    if isinstance(prompt, list):
        context = _ids(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True))
        joint = _ids(tokenizer.apply_chat_template(prompt + response, tokenize=True))
    else:
        rendered = prompt.lstrip().startswith(RENDERED_STARTS)
        adds_bos = tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id
        bos = [tokenizer.bos_token_id] if adds_bos and not rendered else []
        plain = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
        context = bos + plain(prompt)
        joint = bos + plain(prompt + response)
        if not rendered and tokenizer.eos_token_id is not None and joint[-1] != tokenizer.eos_token_id:
            joint = joint + [tokenizer.eos_token_id]
    assert joint[: len(context)] == context, "the reference is only defined where the context is a prefix"
    return context, joint[len(context):]


def _ids(output) -> list[int]:
    return list(output["input_ids"] if hasattr(output, "keys") else output)


def _sentence(rng: random.Random, low: int, high: int) -> str:
    text = " ".join(rng.choices(WORDS, k=rng.randint(low, high)))
    return text[0].upper() + text[1:] + rng.choice([".", "?", "!", ""])


def ultrafeedback_pairs(n: int, seed: int = 0) -> tuple[list, list, list]:
    """Conversational pairs as UltraFeedback-binarized loads: one user turn (some with a system
    message), chosen and rejected single assistant turns."""
    rng = random.Random(seed)
    prompts, chosen, rejected = [], [], []
    for i in range(n):
        turns = [{"role": "user", "content": _sentence(rng, 3, 30)}]
        if i % 4 == 3:
            turns.insert(0, {"role": "system", "content": _sentence(rng, 3, 8)})
        prompts.append(turns)
        chosen.append([{"role": "assistant", "content": _sentence(rng, 1, 40)}])
        rejected.append([{"role": "assistant", "content": _sentence(rng, 1, 40)}])
    return prompts, chosen, rejected


def hh_pairs(n: int, seed: int = 1) -> tuple[list, list, list]:
    """Standard pairs as Anthropic HH-RLHF's text: "\\n\\nHuman: ...\\n\\nAssistant:" dialogues
    (one to three exchanges), responses starting with a space."""
    rng = random.Random(seed)
    prompts, chosen, rejected = [], [], []
    for _ in range(n):
        exchanges = [f"\n\nHuman: {_sentence(rng, 3, 20)}\n\nAssistant: {_sentence(rng, 2, 15)}"
                     for _ in range(rng.randint(0, 2))]
        prompts.append("".join(exchanges) + f"\n\nHuman: {_sentence(rng, 3, 20)}\n\nAssistant:")
        chosen.append(" " + _sentence(rng, 1, 30))
        rejected.append(" " + _sentence(rng, 1, 30))
    return prompts, chosen, rejected


def hh_conversations(n: int, seed: int = 1) -> tuple[list, list, list]:
    """The HH dialogues of `hh_pairs` as conversations (role-marked text turned into turns)."""
    prompts, chosen, rejected = hh_pairs(n, seed)
    turned = []
    for text in prompts:
        turns = []
        for block in text.split("\n\n")[1:]:
            role, _, content = block.partition(": ")
            if content:
                turns.append({"role": "user" if role == "Human" else "assistant", "content": content})
        turned.append(turns)
    as_turn = lambda text: [{"role": "assistant", "content": text.strip()}]
    return turned, [as_turn(c) for c in chosen], [as_turn(r) for r in rejected]
