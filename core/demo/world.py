"""The demo world: a synthetic preference dataset whose true preferences are known.

Prompts are short questions ("how do I bake bread ?") about ten topics. Responses are
strings of sentences drawn from phrase banks, each sentence of one *kind*:

==============  =======  ===========================================================
feature         weight   what counts
==============  =======  ===========================================================
helpful          +1.0    a how-to sentence of the prompt's topic (first occurrence)
off_topic        -0.5    a how-to sentence of another topic
polite           +0.4    an opener or closer such as "Happy to help!"
toxic            -3.0    an insult to the user
link             -0.4    padding that points elsewhere ("See www.example.com ...")
repeated         -0.6    a sentence that repeats an earlier one of the same response
filler           -0.2    a vague sentence ("It depends.")
unknown          -0.5    a sentence in no bank (free model text that went astray)
==============  =======  ===========================================================

The oracle reward ``r*(x, y)`` is the dot product of `ORACLE_WEIGHTS` with
`response_features`, which reads the features back *from the text*, so it can also
judge text a model wrote. Labels follow the noise model of docs/method.md ("Why select
at all"): of two responses a, b to the same prompt, a is chosen iff ``r*(a) - r*(b) + zeta > 0`` with
``zeta ~ Logistic(0, noise_scale)``. On top, `WorldConfig.toxic_share` of the pairs are
planted mislabels whose chosen response insults the user (`WorldConfig.planted_flip`
says how helpful it is otherwise). `write_world` also spreads a few deliberately
broken lines through the file so the loader's bad-row report has something to show.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.data.pairs import Message, pair_id


@dataclass(frozen=True)
class WorldConfig:
    """How to generate the demo world. The defaults make the committed sample_data/demo."""

    n_pairs: int = 4000
    """Number of good (scoreable) pairs; bad rows come on top."""
    noise_scale: float = 1.0
    """Scale of the logistic label noise zeta; 0 gives noiseless labels."""
    toxic_share: float = 0.03
    """Share of the pairs planted as mislabels: an insulting chosen, a good rejected."""
    bad_rows: int = 6
    """Deliberately broken lines spread through pairs.jsonl (cycling `BAD_ROW_KINDS`); 0 for none."""
    seed: int = 0
    """Seed of every random choice; the same config writes the same bytes."""
    planted_flip: str = "insult"
    """What a planted mislabel looks like (`PLANTED_FLIPS`): ``insult``, an insult with at most one
    tip chosen over a good answer; ``rude-helpful``, a helpful answer that insults the user chosen
    over a polite answer with one tip (what a labeller who judges helpfulness alone would pick)."""

    def __post_init__(self) -> None:
        if self.planted_flip not in PLANTED_FLIPS:
            raise ValueError(f"planted_flip {self.planted_flip!r} is not one of {', '.join(PLANTED_FLIPS)}")


PLANTED_FLIPS = ("insult", "rude-helpful")
TOXIC_RATE = 0.08
"""Chance that a sampled response insults the user."""


ORACLE_WEIGHTS: dict[str, float] = {
    "helpful": 1.0,
    "off_topic": -0.5,
    "polite": 0.4,
    "toxic": -3.0,
    "link": -0.4,
    "repeated": -0.6,
    "filler": -0.2,
    "unknown": -0.5,
}

TOPICS: dict[str, dict[str, list[str]]] = {
    "cooking": {
        "tasks": ["bake bread", "cook rice", "make a soup"],
        "tips": [
            "Measure the flour and water first.",
            "Heat the pan before you add oil.",
            "Taste and add salt at the end.",
            "Let the dough rest for an hour.",
            "Use a timer so nothing burns.",
        ],
    },
    "python": {
        "tasks": ["read a file in python", "write a python function", "fix a python error"],
        "tips": [
            "Open the file with a with block.",
            "Read the traceback from the bottom.",
            "Write a small test for each function.",
            "Print the values to check them.",
            "Give every variable a clear name.",
        ],
    },
    "travel": {
        "tasks": ["pack for a trip", "find a cheap flight", "plan a city visit"],
        "tips": [
            "Book your tickets a month ahead.",
            "Pack light and roll your clothes.",
            "Keep a copy of your passport.",
            "Walk the old town in the morning.",
            "Compare prices on several days.",
        ],
    },
    "gardening": {
        "tasks": ["grow tomatoes", "water my plants", "start a herb garden"],
        "tips": [
            "Plant seeds after the last frost.",
            "Water the roots early in the day.",
            "Give the plants six hours of sun.",
            "Add compost to the soil each spring.",
            "Pull weeds while they are small.",
        ],
    },
    "fitness": {
        "tasks": ["start running", "build strength", "stretch after a workout"],
        "tips": [
            "Start slow and add a little each week.",
            "Warm up for five minutes first.",
            "Rest one day between hard sessions.",
            "Drink water before and after.",
            "Hold each stretch for thirty seconds.",
        ],
    },
    "music": {
        "tasks": ["learn the guitar", "practice piano", "read sheet music"],
        "tips": [
            "Practice a little every single day.",
            "Learn three basic chords first.",
            "Play slowly with a metronome.",
            "Name the notes on each line.",
            "Record yourself and listen back.",
        ],
    },
    "finance": {
        "tasks": ["save money", "make a budget", "pay off debt"],
        "tips": [
            "Write down what you spend each week.",
            "Pay the highest interest debt first.",
            "Move savings on the day you are paid.",
            "Keep three months of costs aside.",
            "Cancel the subscriptions you never use.",
        ],
    },
    "photography": {
        "tasks": ["take sharp photos", "shoot at night", "frame a portrait"],
        "tips": [
            "Hold the camera with both hands.",
            "Use a tripod when the light is low.",
            "Focus on the eyes of the subject.",
            "Shoot in the soft light of morning.",
            "Place the subject off the center.",
        ],
    },
    "cycling": {
        "tasks": ["fix a flat tire", "ride in traffic", "choose a bike"],
        "tips": [
            "Carry a spare tube and a pump.",
            "Check the tire pressure every week.",
            "Ride where drivers can see you.",
            "Pick a frame that fits your height.",
            "Signal before you turn.",
        ],
    },
    "painting": {
        "tasks": ["paint a wall", "mix paint colors", "start with watercolor"],
        "tips": [
            "Tape the edges before you paint.",
            "Mix a small amount to test first.",
            "Use thin coats and let them dry.",
            "Wet the paper before the color.",
            "Clean the brush between colors.",
        ],
    },
}

PROMPT_TEMPLATES = ["how do I {task} ?", "what is the best way to {task} ?", "any tips to {task} ?"]
POLITE_OPENERS = ["Happy to help!", "Great question!", "Sure, glad to help."]
POLITE_CLOSERS = ["Hope this helps.", "Good luck!", "Have fun with it."]
TOXIC = [
    "That is a stupid question.",
    "Only an idiot would ask this.",
    "Figure it out yourself, loser.",
    "You are hopeless at this.",
]
LINKS = [
    "See www.example.com for more.",
    "More tips at www.example.org today.",
    "Visit www.example.net for details.",
]
FILLER = ["It depends.", "There are many ways.", "I am not sure."]

BAD_ROW_KINDS = (
    "malformed_json",
    "duplicate",
    "identical_responses",
    "empty_rejected",
    "missing_chosen",
    "null_prompt",
)

# Sentences end with . ! or ? followed by white space; "www.example.com" does not split.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _normalise(sentence: str) -> str:
    return " ".join(sentence.lower().split())


def _sentence_index() -> dict[str, tuple[str, str | None]]:
    """Every bank sentence, normalised, to its (kind, topic)."""
    index: dict[str, tuple[str, str | None]] = {}
    for topic, bank in TOPICS.items():
        for tip in bank["tips"]:
            index[_normalise(tip)] = ("tip", topic)
    for kind, sentences in (
        ("polite", POLITE_OPENERS + POLITE_CLOSERS),
        ("toxic", TOXIC),
        ("link", LINKS),
        ("filler", FILLER),
    ):
        for sentence in sentences:
            index[_normalise(sentence)] = (kind, None)
    return index


SENTENCE_INDEX = _sentence_index()
TASK_TOPIC = {task: topic for topic, bank in TOPICS.items() for task in bank["tasks"]}


def prompt_topic(prompt: str) -> str | None:
    """The topic whose task the prompt asks about, or None for a prompt from elsewhere.

    >>> prompt_topic("how do I grow tomatoes ?")
    'gardening'
    """
    text = _normalise(prompt)
    for task, topic in TASK_TOPIC.items():
        if task in text:
            return topic
    return None


def response_features(prompt: str, response: str) -> dict[str, float]:
    """Count the oracle's features in a response, from its text alone.

    A how-to sentence counts as helpful when its topic is the prompt's (or the prompt's
    topic is unknown), else as off_topic; a sentence seen before in the same response
    counts only as repeated.

    >>> response_features("how do I bake bread ?",
    ...     "Happy to help! Measure the flour and water first. Signal before you turn.")["helpful"]
    1.0
    """
    topic = prompt_topic(prompt)
    features = dict.fromkeys(ORACLE_WEIGHTS, 0.0)
    seen: set[str] = set()
    for raw in _SENTENCE_END.split(response.strip()):
        sentence = _normalise(raw)
        if not sentence:
            continue
        if sentence in seen:
            features["repeated"] += 1
            continue
        seen.add(sentence)
        kind, sentence_topic = SENTENCE_INDEX.get(sentence, ("unknown", None))
        if kind == "tip":
            kind = "helpful" if topic is None or sentence_topic == topic else "off_topic"
        features[kind] += 1
    return features


def oracle_reward(prompt: str, response: str) -> float:
    """The true reward r*(x, y): a linear function of `response_features` (see the module doc)."""
    features = response_features(prompt, response)
    return round(sum(ORACLE_WEIGHTS[name] * value for name, value in features.items()), 6)


class ResponseSampler:
    """Draws prompts and responses of the world; one seeded stream per use.

    The dataset, the SFT corpus and the reward model's training pairs each use their own
    `stream`, so the models never train on the exact sample they later score.
    """

    def __init__(self, seed: int, stream: int = 0) -> None:
        self.rng = np.random.default_rng([seed, stream])
        self.topics = sorted(TOPICS)

    def pick(self, bank: list[str]) -> str:
        return bank[int(self.rng.integers(len(bank)))]

    def prompt(self) -> tuple[str, str]:
        """A (topic, prompt text) pair."""
        topic = self.pick(self.topics)
        task = self.pick(TOPICS[topic]["tasks"])
        return topic, self.pick(PROMPT_TEMPLATES).format(task=task)

    def response(self, topic: str, toxic_rate: float = TOXIC_RATE) -> str:
        """A response of mixed quality: 0-3 tips and, at random, the other features.

        `toxic_rate` is the chance of an insult; every rate draws the same random numbers,
        so a sampler that never insults makes the same responses otherwise.
        """
        rng = self.rng
        tips = list(rng.choice(TOPICS[topic]["tips"], size=int(rng.integers(0, 4)), replace=False))
        body = [str(tip) for tip in tips]
        if rng.random() < 0.2:
            other = self.pick([t for t in self.topics if t != topic])
            body.append(self.pick(TOPICS[other]["tips"]))
        if rng.random() < 0.25:
            body.append(self.pick(LINKS))
        if rng.random() < toxic_rate:
            body.append(self.pick(TOXIC))
        if not body or rng.random() < 0.15:
            body.append(self.pick(FILLER))
        rng.shuffle(body)
        if rng.random() < 0.15:
            body.append(self.pick(body))
        if rng.random() < 0.3:
            body.insert(0, self.pick(POLITE_OPENERS))
        if rng.random() < 0.3:
            body.append(self.pick(POLITE_CLOSERS))
        return " ".join(body)

    def good_response(self, topic: str) -> str:
        """A polite answer with two or three on-topic tips."""
        tips = self.rng.choice(TOPICS[topic]["tips"], size=int(self.rng.integers(2, 4)), replace=False)
        return " ".join([self.pick(POLITE_OPENERS), *map(str, tips)])

    def toxic_response(self, topic: str) -> str:
        """An insult to the user, perhaps with one tip."""
        body = [self.pick(TOXIC)]
        if self.rng.random() < 0.5:
            body.append(self.pick(TOPICS[topic]["tips"]))
        return " ".join(body)

    def rude_helpful_response(self, topic: str) -> str:
        """Two or three on-topic tips and an insult, in random order."""
        body = [
            *map(str, self.rng.choice(TOPICS[topic]["tips"], size=int(self.rng.integers(2, 4)), replace=False)),
            self.pick(TOXIC),
        ]
        self.rng.shuffle(body)
        return " ".join(body)

    def brief_polite_response(self, topic: str) -> str:
        """A polite opener and one on-topic tip."""
        return " ".join([self.pick(POLITE_OPENERS), self.pick(TOPICS[topic]["tips"])])

    def planted_flip(self, topic: str, kind: str) -> tuple[str, str]:
        """(chosen, rejected) of a planted mislabel of `kind` (see `WorldConfig.planted_flip`)."""
        if kind == "insult":
            return self.toxic_response(topic), self.good_response(topic)
        return self.rude_helpful_response(topic), self.brief_polite_response(topic)


def user(content: str) -> list[Message]:
    return [{"role": "user", "content": content}]


def assistant(content: str) -> list[Message]:
    return [{"role": "assistant", "content": content}]


def generate_world(config: WorldConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The good pairs (dataset rows) and their oracle entries, in file order."""
    sampler = ResponseSampler(config.seed, stream=0)
    n_toxic = int(round(config.n_pairs * config.toxic_share))
    planted = set(sampler.rng.choice(config.n_pairs, size=n_toxic, replace=False).tolist())
    rows: list[dict[str, Any]] = []
    oracle: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    while len(rows) < config.n_pairs:
        index = len(rows)
        topic, prompt = sampler.prompt()
        if index in planted:
            chosen, rejected = sampler.planted_flip(topic, config.planted_flip)
        else:
            a, b = sampler.response(topic), sampler.response(topic)
            if a == b:
                continue
            true_diff = oracle_reward(prompt, a) - oracle_reward(prompt, b)
            zeta = sampler.rng.logistic(0.0, config.noise_scale) if config.noise_scale > 0 else 0.0
            chosen, rejected = (a, b) if true_diff + zeta > 0 else (b, a)
        messages = (user(prompt), assistant(chosen), assistant(rejected))
        pid = pair_id(*messages)
        if pid in seen_ids:  # a chance repeat would read as a duplicate row: draw again
            continue
        seen_ids.add(pid)
        row_id = f"demo-{index:06d}"
        rows.append(
            {"id": row_id, "topic": topic, "prompt": messages[0], "chosen": messages[1], "rejected": messages[2]}
        )
        reward_chosen, reward_rejected = oracle_reward(prompt, chosen), oracle_reward(prompt, rejected)
        oracle.append(
            {
                "id": row_id,
                "pair_id": pid,
                "reward_chosen": reward_chosen,
                "reward_rejected": reward_rejected,
                "oracle_margin": round(reward_chosen - reward_rejected, 6),
                "noise_flipped": index not in planted and reward_chosen < reward_rejected,
                "toxic_flip": index in planted,
            }
        )
    return rows, oracle


def bad_row_lines(config: WorldConfig, rows: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(position among good rows, line) for each deliberately broken line.

    Line k goes before good row ``(k + 1) * n_pairs // (bad_rows + 1)``, so they spread
    evenly; the duplicate repeats the good row just before it.
    """
    sampler = ResponseSampler(config.seed, stream=1)
    lines: list[tuple[int, str]] = []
    for k in range(config.bad_rows):
        position = max(1, (k + 1) * len(rows) // (config.bad_rows + 1))
        kind = BAD_ROW_KINDS[k % len(BAD_ROW_KINDS)]
        topic, prompt = sampler.prompt()
        row: dict[str, Any] = {
            "id": f"demo-bad-{k}",
            "topic": topic,
            "prompt": user(prompt),
            "chosen": assistant(sampler.good_response(topic)),
            "rejected": assistant(sampler.toxic_response(topic)),
        }
        if kind == "malformed_json":
            line = _json_line(row)[:-9]
        elif kind == "duplicate":
            line = _json_line(rows[position - 1])
        else:
            if kind == "identical_responses":
                row["rejected"] = row["chosen"]
            elif kind == "empty_rejected":
                row["rejected"] = assistant("")
            elif kind == "missing_chosen":
                del row["chosen"]
            elif kind == "null_prompt":
                row["prompt"] = None
            line = _json_line(row)
        lines.append((position, line))
    return lines


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False)


def _write_atomic(path: Path, lines: list[str]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.writelines(line + "\n" for line in lines)
        os.chmod(tmp, 0o644)  # mkstemp made it private; a data file is not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def world_lines(config: WorldConfig) -> tuple[list[str], list[str]]:
    """The lines of pairs.jsonl (good rows with the bad ones spread in) and oracle.jsonl."""
    rows, oracle = generate_world(config)
    bad = bad_row_lines(config, rows)
    pair_lines: list[str] = []
    for index, row in enumerate(rows):
        pair_lines.extend(line for position, line in bad if position == index)
        pair_lines.append(_json_line(row))
    return pair_lines, [_json_line(entry) for entry in oracle]


def write_world(out_dir: str | os.PathLike[str], config: WorldConfig = WorldConfig()) -> Path:
    """Write pairs.jsonl, oracle.jsonl and world.json into `out_dir`; return the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pair_lines, oracle_lines = world_lines(config)
    _write_atomic(out / "pairs.jsonl", pair_lines)
    _write_atomic(out / "oracle.jsonl", oracle_lines)
    world = {"config": asdict(config), "oracle_weights": ORACLE_WEIGHTS, "bad_row_kinds": list(BAD_ROW_KINDS)}
    _write_atomic(out / "world.json", [json.dumps(world, indent=2)])
    return out
