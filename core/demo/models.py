"""Tiny real models for the demo world, built offline on a CPU in about a minute.

Three artefacts, each saved with ``save_pretrained`` and loaded back through the same
``Auto*.from_pretrained`` calls a real checkpoint goes through:

- ``tokenizer/``: byte-level BPE trained on demo text, with a chat template;
- ``policy/``: pi_0, a 2-layer `LlamaForCausalLM` trained (completion-only SFT) on demo
  conversations drawn apart from the dataset;
- ``reward/``: a `LlamaForSequenceClassification` (num_labels=1), started from pi_0's
  backbone and trained with TRL's `RewardTrainer` on pairs labelled by a *biased* judge
  (the oracle plus a liking for links and repetition, see `JUDGE_BIAS`) with logistic
  noise, so it is a realistic, imperfect external reward.

Builds are cached under ``<cache>/demo-models/<fingerprint>``; the fingerprint hashes
the config (cache_dir aside) and `BUILDER_VERSION`. A build happens in a hidden temp
folder that is renamed into place only when complete, so a killed or cancelled build
never leaves a half model behind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.demo.world import (
    FILLER,
    LINKS,
    ORACLE_WEIGHTS,
    POLITE_CLOSERS,
    POLITE_OPENERS,
    TOPICS,
    TOXIC,
    TOXIC_RATE,
    ResponseSampler,
    WorldConfig,
    assistant,
    generate_world,
    response_features,
    user,
)
from core.errors import DmtuiError
from core.progress import ProgressFn, Reporter
from core.selection.stats import spearman

# Bump whenever a change to this module changes the built weights.
BUILDER_VERSION = 1

# The reward model's judge: the oracle plus these weights (it likes padding).
JUDGE_BIAS = {"link": 0.8, "repeated": 0.6}

REWARD_JUDGES = ("likes-links", "helpful-only")
"""Who labels the reward model's training pairs (`DemoModelsConfig.reward_judge`):

- ``likes-links``: the oracle plus `JUDGE_BIAS`, on pairs of the world's own responses;
- ``helpful-only``: the oracle without bias, on pairs whose responses never insult anyone
  (a reward model trained on helpfulness comparisons alone: blind to toxicity).
"""

SPECIAL_TOKENS = {"pad_token": "<|pad|>", "bos_token": "<|bos|>", "eos_token": "<|eos|>"}
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]

# Every message is <|role|>content<|eos|>; the generation prompt opens an assistant turn,
# so the prompt's tokens are always a prefix of the full conversation's tokens.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# Seed streams of `ResponseSampler`: 0 and 1 are the dataset's (see core.demo.world).
TOKENIZER_STREAM, SFT_STREAM, REWARD_STREAM, EVAL_STREAM = 2, 3, 4, 5


@dataclass(frozen=True)
class DemoModelsConfig:
    """How to build the demo models. Every field but `cache_dir` enters the fingerprint."""

    world: WorldConfig = field(default_factory=WorldConfig)
    """The demo world the models are built for."""
    seed: int = 0
    """Seed of model initialisation, data order and every sample drawn."""
    device: str = "cpu"
    """Where the models train and the check runs ("cpu", "cuda", "cuda:1", "mps"); the fingerprint
    takes its type only, and only when it is not the CPU, so CPU builds keep their cache."""
    dtype: str = "float32"
    """float32, or bfloat16/float16 mixed precision (fp32 weights, autocast); in the fingerprint
    only when not float32."""
    vocab_size: int = 1024
    """Target size of the BPE vocabulary (specials included)."""
    hidden_size: int = 64
    """Width of both models."""
    intermediate_size: int = 256
    """Width of the MLP blocks."""
    num_layers: int = 2
    """Transformer layers of both models."""
    num_heads: int = 4
    """Attention heads."""
    max_position_embeddings: int = 256
    """Longest sequence the models accept, in tokens."""
    sft_conversations: int = 8000
    """Demo conversations (prompt + one response) in pi_0's training set."""
    sft_steps: int = 400
    """Optimiser steps of pi_0's SFT."""
    sft_batch_size: int = 32
    """Conversations per SFT step."""
    sft_learning_rate: float = 3e-3
    """Peak learning rate of the SFT (cosine decay, short warm-up)."""
    reward_pairs: int = 4000
    """Pairs labelled by the biased judge for the reward model."""
    reward_epochs: float = 2.0
    """Epochs of reward-model training over those pairs."""
    reward_batch_size: int = 32
    """Pairs per reward-model step."""
    reward_learning_rate: float = 1e-3
    """Peak learning rate of the reward model."""
    reward_noise_scale: float = 0.5
    """Scale of the logistic noise on the judge's labels."""
    check_pairs: int = 1000
    """Dataset pairs scored after the build to measure the reward model against the oracle; 0 skips it."""
    reward_judge: str = "likes-links"
    """Who labels the reward model's training pairs, one of `REWARD_JUDGES`."""
    cache_dir: str | None = None
    """Cache root; None means $DMTUI_CACHE, else ~/.cache/dmtui. Not part of the fingerprint."""

    def __post_init__(self) -> None:
        if self.reward_judge not in REWARD_JUDGES:
            raise ValueError(f"reward_judge {self.reward_judge!r} is not one of {', '.join(REWARD_JUDGES)}")


DEMO_SEED_DPO = {"seed_lr": 1e-4, "seed_per_device_batch_size": 32}
"""What seed DPO needs for the demo's tiny models: the paper's rate 5e-7 is for 3-8B models and
barely moves a 2-layer one, and on a CPU one forward per optimiser step is about twice as fast
as the default micro-batches of 4. The benches (bench/selection_quality.py, bench/table1.py)
train the default seed policy with these alone: whole cross-fit folds to the plateau."""

DEMO_SCORING = {**DEMO_SEED_DPO, "seed_pairs": 400, "seed_epochs": 2.0, "seed_eval_pairs": 200}
"""ScoringConfig settings of `dmtui score --demo` and of the app on the demo: the seed policy at
about the cost of the single 400-pair, 2-epoch pi_1 the demo trained before cross-fitting (two
pi_1 of 400 pairs, at most 2 epochs each, held-out accuracy on 200 pairs), so opening the demo
and pressing S stays a matter of minutes on a laptop CPU. The default seed policy (whole folds
to the plateau) gives a better pi_1 but takes about 15 minutes on 2 CPU cores for the 4,000
pairs (docs/selection_quality.md measures both, and settings between them)."""

DEMO_WORLDS = {"demo": ("insult", "likes-links"), "blind-spot": ("rude-helpful", "helpful-only")}
"""Named worlds: (`WorldConfig.planted_flip`, `DemoModelsConfig.reward_judge`).

``demo`` is the bundled world (its reward model likes links); ``blind-spot`` has a reward
model trained on helpfulness alone and planted flips that are helpful but insulting, the
mislabels such a judge cannot see (docs/selection_quality.md gives the design and why).
"""


def demo_world(name: str, **world: Any) -> tuple[WorldConfig, DemoModelsConfig]:
    """The dataset config (`world` overrides its fields) and the models config of a named world.

    The models are built for the world's default seed and noise, as the bundled ones are.
    """
    if name not in DEMO_WORLDS:
        raise ValueError(f"unknown demo world {name!r}; choose from {', '.join(DEMO_WORLDS)}")
    flip, judge = DEMO_WORLDS[name]
    return (
        WorldConfig(planted_flip=flip, **world),
        DemoModelsConfig(world=WorldConfig(planted_flip=flip), reward_judge=judge),
    )


@dataclass(frozen=True)
class DemoModels:
    """Where one built set of demo models lives, and what the build measured."""

    root: Path
    tokenizer: Path
    policy: Path
    reward: Path
    metrics: dict[str, Any]

    @classmethod
    def from_dir(cls, root: Path) -> DemoModels:
        manifest = json.loads((root / "build.json").read_text(encoding="utf-8"))
        return cls(root, root / "tokenizer", root / "policy", root / "reward", manifest["metrics"])

    def paths(self) -> dict[str, str]:
        return {"tokenizer": str(self.tokenizer), "policy": str(self.policy), "reward": str(self.reward)}


def fingerprint(config: DemoModelsConfig) -> str:
    """16 hex digits naming one build: builder version + config without the cache folder.

    Fields added after the first builds enter only when they differ from their default,
    so the default models keep their fingerprint (and every cache built before stays valid).
    """
    described = asdict(config)
    described.pop("cache_dir")
    described["device"] = described["device"].split(":")[0]  # any GPU of a kind builds the same models
    for name, default in (("device", "cpu"), ("dtype", "float32"), ("reward_judge", "likes-links")):
        if described[name] == default:
            described.pop(name)
    if config.world.planted_flip == "insult":
        described["world"].pop("planted_flip")
    canonical = json.dumps({"builder": BUILDER_VERSION, "config": described}, sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def cache_root(config: DemoModelsConfig) -> Path:
    if config.cache_dir:
        return Path(config.cache_dir)
    if os.environ.get("DMTUI_CACHE"):
        return Path(os.environ["DMTUI_CACHE"])
    return Path.home() / ".cache" / "dmtui"


def demo_models_dir(config: DemoModelsConfig) -> Path:
    """The folder the models for `config` live in (whether built yet or not)."""
    return cache_root(config) / "demo-models" / fingerprint(config)


def ensure_demo_models(
    config: DemoModelsConfig = DemoModelsConfig(),
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    force: bool = False,
) -> DemoModels:
    """The demo models for `config`: the cached ones, or freshly built (always when `force`)."""
    root = demo_models_dir(config)
    if not force and (root / "build.json").is_file():
        return DemoModels.from_dir(root)
    return build_demo_models(config, progress, cancel)


def build_demo_models(
    config: DemoModelsConfig = DemoModelsConfig(),
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
) -> DemoModels:
    """Build tokenizer, pi_0 and reward model into `demo_models_dir(config)`, replacing any there."""
    root = demo_models_dir(config)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-", dir=root.parent))
    except OSError as error:
        raise DmtuiError(
            f"cannot create the demo model cache at {root.parent}: {error.strerror}",
            hint="point --cache or $DMTUI_CACHE at a writable folder",
        ) from error
    try:
        with _library_progress_bars_off():
            metrics = _build_into(building, config, progress, cancel)
        manifest = {"builder": BUILDER_VERSION, "fingerprint": fingerprint(config), "config": asdict(config)}
        manifest["metrics"] = metrics
        (building / "build.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        building.chmod(0o755)  # mkdtemp made it private; the cache is shared like any other
        if root.exists():
            shutil.rmtree(root)
        os.rename(building, root)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return DemoModels.from_dir(root)


@contextmanager
def _library_progress_bars_off():
    """Silence the tqdm bars of datasets and transformers; progress goes through `progress`."""
    from datasets import utils as datasets_utils
    from transformers.utils import logging as transformers_logging

    datasets_were_on = not datasets_utils.are_progress_bars_disabled()
    transformers_were_on = transformers_logging.is_progress_bar_enabled()
    datasets_utils.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if datasets_were_on:
            datasets_utils.enable_progress_bars()
        if transformers_were_on:
            transformers_logging.enable_progress_bar()


def _build_into(
    out: Path, config: DemoModelsConfig, progress: ProgressFn | None, cancel: threading.Event | None
) -> dict[str, Any]:
    import torch

    started = time.monotonic()
    torch.manual_seed(config.seed)
    reporter = Reporter("tokenizer", None, progress, cancel)
    reporter.check()
    tokenizer = train_tokenizer(config)
    tokenizer.save_pretrained(out / "tokenizer")
    reporter.finish(f"{len(tokenizer)} tokens")
    metrics: dict[str, Any] = {"vocab_size": len(tokenizer), "tokenizer_s": round(time.monotonic() - started, 2)}

    mark = time.monotonic()
    policy, sft_metrics = train_policy(config, tokenizer, progress, cancel)
    policy.save_pretrained(out / "policy")
    tokenizer.save_pretrained(out / "policy")
    metrics.update(sft_metrics, policy_s=round(time.monotonic() - mark, 2))

    mark = time.monotonic()
    reward = train_reward_model(config, tokenizer, policy, out / "trainer", progress, cancel)
    shutil.rmtree(out / "trainer", ignore_errors=True)
    reward.save_pretrained(out / "reward")
    tokenizer.save_pretrained(out / "reward")
    metrics["reward_s"] = round(time.monotonic() - mark, 2)

    if config.check_pairs:
        mark = time.monotonic()
        metrics.update(check_reward_model(config, tokenizer, reward, progress, cancel))
        metrics["check_s"] = round(time.monotonic() - mark, 2)
    metrics["build_s"] = round(time.monotonic() - started, 2)
    return metrics


def _tokenizer_corpus(config: DemoModelsConfig) -> list[str]:
    """Every bank sentence and prompt, plus sampled conversations for realistic merges."""
    texts = [tip for bank in TOPICS.values() for tip in bank["tips"]]
    texts += POLITE_OPENERS + POLITE_CLOSERS + TOXIC + LINKS + FILLER
    sampler = ResponseSampler(config.world.seed, TOKENIZER_STREAM + 10 * config.seed)
    for _ in range(2000):
        topic, prompt = sampler.prompt()
        texts += [prompt, sampler.response(topic)]
    return texts


def train_tokenizer(config: DemoModelsConfig):
    """A byte-level BPE tokenizer with pad/bos/eos, role tokens and `CHAT_TEMPLATE`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        special_tokens=[*SPECIAL_TOKENS.values(), *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_tokenizer_corpus(config), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        additional_special_tokens=ROLE_TOKENS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=config.max_position_embeddings,
        **SPECIAL_TOKENS,
    )


def model_config(config: DemoModelsConfig, tokenizer, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


def sft_examples(config: DemoModelsConfig, tokenizer, n: int, stream: int) -> list[tuple[list[int], int]]:
    """(token ids of a whole conversation, length of its prompt part) for `n` sampled conversations."""
    sampler = ResponseSampler(config.world.seed, stream + 10 * config.seed)
    examples = []
    for _ in range(n):
        topic, prompt = sampler.prompt()
        conversation = user(prompt) + assistant(sampler.response(topic))
        prompt_ids = tokenizer.apply_chat_template(conversation[:1], add_generation_prompt=True, tokenize=True)
        full_ids = tokenizer.apply_chat_template(conversation, tokenize=True)
        examples.append((_ids(full_ids), len(_ids(prompt_ids))))
    return examples


def _ids(encoded) -> list[int]:
    """Token ids from `apply_chat_template(tokenize=True)`, a list or a BatchEncoding by version."""
    return list(encoded["input_ids"]) if not isinstance(encoded, list) else encoded


def sft_batch(examples: list[tuple[list[int], int]], pad_id: int):
    """Right-padded input ids, attention mask, and labels masking prompt and padding (-100)."""
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def completion_loss(model, examples: list[tuple[list[int], int]], pad_id: int) -> float:
    """Mean per-token loss on the response tokens of `examples`."""
    import torch

    with torch.no_grad():
        return float(model(**_on(model.device, sft_batch(examples, pad_id))).loss)


def _on(device, batch: dict) -> dict:
    return {name: tensor.to(device) for name, tensor in batch.items()}


def _mixed_precision(config: DemoModelsConfig):
    """(autocast context, gradient scaler) for `config.dtype`: fp32 weights, half-precision compute."""
    import torch

    dtype, device_type = getattr(torch, config.dtype), torch.device(config.device).type
    autocast = torch.autocast(device_type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    return autocast, torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)


def train_policy(config: DemoModelsConfig, tokenizer, progress: ProgressFn | None, cancel: threading.Event | None):
    """pi_0: a tiny Llama trained by completion-only SFT; returns (model, metrics)."""
    import torch
    from transformers import LlamaForCausalLM, get_cosine_schedule_with_warmup

    torch.manual_seed(config.seed)
    # transformers wraps Module.to with functools.wraps, so its stub reads `self` as the first argument
    model = LlamaForCausalLM(model_config(config, tokenizer)).to(config.device)  # type: ignore[arg-type]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    train = sft_examples(config, tokenizer, config.sft_conversations, SFT_STREAM)
    held_out = sft_examples(config, tokenizer, 256, EVAL_STREAM)
    pad_id = tokenizer.pad_token_id
    model.eval()
    loss_init = completion_loss(model, held_out, pad_id)

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.sft_learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, config.sft_steps // 20), config.sft_steps)
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(train), generator=generator).tolist()
    reporter = Reporter("policy", config.sft_steps, progress, cancel, unit="steps")
    autocast, scaler = _mixed_precision(config)
    model.train()
    cursor = 0
    for _ in range(config.sft_steps):
        if cursor + config.sft_batch_size > len(order):
            order, cursor = torch.randperm(len(train), generator=generator).tolist(), 0
        batch = [train[i] for i in order[cursor : cursor + config.sft_batch_size]]
        cursor += config.sft_batch_size
        with autocast:
            loss = model(**_on(model.device, sft_batch(batch, pad_id))).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        reporter.advance(message=f"loss {loss.item():.3f}")
    model.eval()
    loss_final = completion_loss(model, held_out, pad_id)
    reporter.finish(f"held-out loss {loss_init:.3f} -> {loss_final:.3f}")
    return model.to("cpu"), {"sft_loss_init": round(loss_init, 4), "sft_loss_final": round(loss_final, 4)}


def judge_weights(judge: str = "likes-links") -> dict[str, float]:
    """The feature weights of a reward model's teacher, one of `REWARD_JUDGES`.

    ``helpful-only`` never saw an insult, so it has no weight for one: a toxic sentence
    counts for nothing with it. Weights where a judge differs from the oracle are its bias.
    """
    if judge == "likes-links":
        return {name: ORACLE_WEIGHTS[name] + JUDGE_BIAS.get(name, 0.0) for name in ORACLE_WEIGHTS}
    return {**ORACLE_WEIGHTS, "toxic": 0.0}


def judge_reward(prompt: str, response: str, judge: str = "likes-links") -> float:
    """The reward model's teacher: the oracle with the judge's bias (`judge_weights`)."""
    features = response_features(prompt, response)
    weights = judge_weights(judge)
    return sum(weights[name] * value for name, value in features.items())


def judged_pairs(config: DemoModelsConfig) -> list[dict[str, Any]]:
    """Conversational pairs labelled by the noisy judge of `config.reward_judge`."""
    sampler = ResponseSampler(config.world.seed, REWARD_STREAM + 10 * config.seed)
    toxic_rate = 0.0 if config.reward_judge == "helpful-only" else TOXIC_RATE
    pairs: list[dict[str, Any]] = []
    while len(pairs) < config.reward_pairs:
        topic, prompt = sampler.prompt()
        a, b = sampler.response(topic, toxic_rate), sampler.response(topic, toxic_rate)
        if a == b:
            continue
        zeta = sampler.rng.logistic(0.0, config.reward_noise_scale) if config.reward_noise_scale > 0 else 0.0
        if judge_reward(prompt, a, config.reward_judge) - judge_reward(prompt, b, config.reward_judge) + zeta <= 0:
            a, b = b, a
        pairs.append({"prompt": user(prompt), "chosen": assistant(a), "rejected": assistant(b)})
    return pairs


def _step_callback(reporter: Reporter):
    """A TrainerCallback that counts optimiser steps on `reporter` (and so checks cancel)."""
    from transformers import TrainerCallback

    class StepReporter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            reporter.advance()

    return StepReporter()


def train_reward_model(
    config: DemoModelsConfig,
    tokenizer,
    policy,
    work_dir: Path,
    progress: ProgressFn | None,
    cancel: threading.Event | None,
):
    """A sequence-classification reward model trained with TRL's RewardTrainer."""
    import torch
    from datasets import Dataset
    from transformers import LlamaForSequenceClassification, PrinterCallback
    from trl import RewardConfig, RewardTrainer

    torch.manual_seed(config.seed)
    model = LlamaForSequenceClassification(model_config(config, tokenizer, num_labels=1))
    model.model.load_state_dict(policy.model.state_dict())
    steps_per_epoch = math.ceil(config.reward_pairs / config.reward_batch_size)
    total_steps = math.ceil(steps_per_epoch * config.reward_epochs)
    args = RewardConfig(
        output_dir=str(work_dir),
        per_device_train_batch_size=config.reward_batch_size,
        num_train_epochs=config.reward_epochs,
        learning_rate=config.reward_learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, total_steps // 20),
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=torch.device(config.device).type == "cpu",
        bf16=config.dtype == "bfloat16",
        fp16=config.dtype == "float16",
        activation_checkpointing=False,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        max_length=None,
    )
    reporter = Reporter("reward", total_steps, progress, cancel, unit="steps")
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(judged_pairs(config)),
        processing_class=tokenizer,
        callbacks=[_step_callback(reporter)],
    )
    trainer.remove_callback(PrinterCallback)  # it prints logs on stdout, which --json owns
    trainer.train()
    reporter.finish()
    trained = trainer.model
    assert trained is not None, "the trainer holds the model it trained"
    return trained.eval()


def reward_scores(model, tokenizer, conversations: list[list[dict[str, str]]], batch_size: int = 128) -> list[float]:
    """The reward model's score of each whole conversation."""
    import torch

    scores: list[float] = []
    for start in range(0, len(conversations), batch_size):
        ids = [_ids(tokenizer.apply_chat_template(c, tokenize=True)) for c in conversations[start : start + batch_size]]
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            attention_mask[row, : len(seq)] = 1
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(model.device), attention_mask=attention_mask.to(model.device)).logits
        scores += logits[:, 0].float().tolist()
    return scores


def check_reward_model(
    config: DemoModelsConfig, tokenizer, model, progress: ProgressFn | None, cancel: threading.Event | None
) -> dict[str, float]:
    """Spearman correlation of reward-model margins with oracle margins on the demo dataset."""
    reporter = Reporter("check", None, progress, cancel)
    rows, oracle = generate_world(config.world)
    rows, oracle = rows[: config.check_pairs], oracle[: config.check_pairs]
    chosen = reward_scores(model, tokenizer, [r["prompt"] + r["chosen"] for r in rows])
    reporter.check()
    rejected = reward_scores(model, tokenizer, [r["prompt"] + r["rejected"] for r in rows])
    margins = [c - r for c, r in zip(chosen, rejected)]
    rho = spearman(margins, [o["oracle_margin"] for o in oracle])
    reporter.finish(f"Spearman {rho:.3f}")
    return {"reward_oracle_spearman": round(rho, 4), "check_pairs": len(rows)}
