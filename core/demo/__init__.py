"""The offline demo world: a synthetic dataset with a known oracle, and tiny models for it.

`core.demo.world` generates the data (pure Python + numpy); `core.demo.models` builds the
tokenizer, pi_0 and reward model (imports torch and transformers, so import it only when
models are needed).
"""

from core.demo.world import (
    ORACLE_WEIGHTS,
    WorldConfig,
    generate_world,
    oracle_reward,
    response_features,
    write_world,
)

__all__ = [
    "ORACLE_WEIGHTS",
    "WorldConfig",
    "generate_world",
    "oracle_reward",
    "response_features",
    "write_world",
]
