"""Loading models and tokenizers safely, picking a device, fingerprinting a model.

Safety defaults: weights load only from safetensors (pickle files can run code when
unpickled) unless ``allow_pickle=True`` (``--allow-pickle``); ``trust_remote_code`` is
off unless passed (``--trust-remote-code``), and a model whose config or tokenizer
config asks for its own Python classes (``auto_map``) is then refused, not quietly
loaded with a built-in class in place of the code its author wrote; a checkpoint whose
weights do not cover the model (a randomly initialised head or layer) is refused
instead of scored. A folder holding ``adapter_config.json`` is a
LoRA adapter: the base it names is loaded, the adapter applied and merged
(``merge_and_unload``), because an unmerged adapter is the classic cause of implicit
rewards that disagree with the ones logged during DPO (docs/method.md).

`model_fingerprint` names a model for score caching; see its docstring for what a
local fingerprint covers and what it trades away on very large shards.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from core.errors import DmtuiError

ADAPTER_CONFIG = "adapter_config.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
WEIGHT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES, ".gguf")
REMOTE_CODE_HINT = (
    "pass --trust-remote-code (trust_remote_code=True) only if you trust its source and have read that code"
)
PICKLE_HINT = (
    "convert the checkpoint to safetensors, or pass --allow-pickle (allow_pickle=True) if you trust its source"
)
CONFIG_FILES = ("config.json", "tokenizer_config.json")
"""Where a checkpoint names Python classes of its own (``auto_map``)."""
FULL_HASH_LIMIT = 256 * 1024**2
"""Weight files up to this size are hashed in full (sha256 runs at roughly 0.5-1 GB/s)."""
EDGE_BYTES = 1024**2
"""For larger shards: the safetensors header, the size, and this many bytes at each end."""


class ModelLoadError(DmtuiError):
    """A model, adapter or tokenizer cannot be loaded as asked."""


def pick_device(requested: str | None = "auto") -> torch.device:
    """The device to run on: ``requested`` as given, or for "auto"/None cuda, then mps, then cpu."""
    if requested not in (None, "auto"):
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device | str, requested: str | torch.dtype | None = "auto") -> torch.dtype:
    """The compute dtype: bf16 on cuda when supported, else fp16 on cuda; fp32 on cpu and mps.

    An explicit ``requested`` ("bfloat16", "float16", "float32" or a torch.dtype) wins.
    """
    if isinstance(requested, torch.dtype):
        return requested
    if requested not in (None, "auto"):
        dtype = getattr(torch, str(requested), None)
        if not isinstance(dtype, torch.dtype):
            raise ModelLoadError(f"unknown dtype {requested!r}", hint="use auto, bfloat16, float16 or float32")
        return dtype
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class LoadedModels:
    """Models loaded once on one device and dtype, shared by the steps that use them.

    An online round generates with the policy and scores implicit margins with it; an
    evaluation samples from two models and judges with a third: each is loaded once,
    and `release` frees what no later step needs (before training, say).
    """

    def __init__(
        self, device: str | None = "auto", dtype: str | torch.dtype | None = "auto", *, allow_pickle: bool = False
    ) -> None:
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, dtype)
        self.allow_pickle = allow_pickle
        self._held: dict[tuple[str, str], Any] = {}

    def causal_lm(self, name_or_path: str | os.PathLike):
        return self._get(
            "causal",
            name_or_path,
            lambda: load_causal_lm(name_or_path, device=self.device, dtype=self.dtype, allow_pickle=self.allow_pickle),
        )

    def reward_model(self, name_or_path: str | os.PathLike):
        return self._get(
            "reward",
            name_or_path,
            lambda: load_reward_model(
                name_or_path, device=self.device, dtype=self.dtype, allow_pickle=self.allow_pickle
            ),
        )

    def tokenizer(self, name_or_path: str | os.PathLike):
        return self._get("tokenizer", name_or_path, lambda: load_tokenizer(name_or_path))

    def release(self, *names_or_paths: str | os.PathLike) -> None:
        """Forget the models (and tokenizers) of these paths, or of every path when none is named."""
        wanted = {os.fspath(p) for p in names_or_paths}
        for key in [k for k in self._held if not wanted or k[1] in wanted]:
            del self._held[key]
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _get(self, kind: str, name_or_path, load):
        key = (kind, os.fspath(name_or_path))
        if key not in self._held:
            self._held[key] = load()
        return self._held[key]


def load_tokenizer(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    padding_side: str = "right",
):
    """Load a tokenizer with a pad token (eos when it has none) and the given padding side.

    No token is ever added, so no embedding matrix needs resizing. For a LoRA adapter
    folder without tokenizer files, the base model's tokenizer is used.
    """
    from transformers import AutoTokenizer

    source = _resolve(name_or_path)
    adapter = _adapter_config(source)
    if adapter is not None and not _has_tokenizer_files(Path(source)):
        source = adapter["base_model_name_or_path"]
        revision = None
    _refuse_remote_code(source, trust_remote_code, revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load a tokenizer from {source}: {exc}",
            hint=REMOTE_CODE_HINT
            if "trust_remote_code" in str(exc)
            else "pass a folder with tokenizer.json / tokenizer_config.json, or a model id in the local cache",
        ) from exc
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(
    name_or_path: str | os.PathLike,
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    revision: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
):
    """Load a causal LM (or a LoRA adapter merged into its base) in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM

    return _load(
        AutoModelForCausalLM,
        name_or_path,
        device=device,
        dtype=dtype,
        revision=revision,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )


def load_reward_model(
    name_or_path: str | os.PathLike,
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    revision: str | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
):
    """Load a sequence-classification reward model with a single output (num_labels == 1)."""
    from transformers import AutoModelForSequenceClassification

    model = _load(
        AutoModelForSequenceClassification,
        name_or_path,
        device=device,
        dtype=dtype,
        revision=revision,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )
    if model.config.num_labels != 1:
        raise ModelLoadError(
            f"{name_or_path} is not a reward model: its classification head has "
            f"{model.config.num_labels} labels, a reward model has exactly 1",
            hint="pass a sequence-classification reward model (one scalar score per text)",
        )
    return model


CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
"""Config fields that name a model's context length, by architecture."""


def model_context_length(name_or_path: str | os.PathLike, revision: str | None = None) -> int | None:
    """The longest sequence a model takes, read from its config (no weights, no model code), or None.

    A LoRA adapter's is its base model's; a multimodal config's is its text model's.
    """
    source = _resolve(name_or_path)
    adapter = _adapter_config(source)
    if adapter is not None:
        return model_context_length(adapter["base_model_name_or_path"])
    path = _config_file(source, "config.json", revision)
    try:
        config = json.loads(path.read_text("utf-8")) if path is not None else None
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    for section in (config, config.get("text_config") or {}):
        for name in CONTEXT_FIELDS:
            value = section.get(name) if isinstance(section, dict) else None
            if isinstance(value, int) and value > 0:
                return value
    return None


def model_fingerprint(name_or_path: str | os.PathLike, revision: str | None = None) -> str:
    """A stable id of a model's exact weights and tokenizer, for keying cached scores.

    Local folder: ``sha256:<hex>`` over config and tokenizer files (full content), and
    for every weight file its name, size and a checksum. Weight files up to
    `FULL_HASH_LIMIT` are hashed in full. Larger shards are hashed by their safetensors
    header (tensor names, dtypes, shapes, offsets), size, and the first and last
    `EDGE_BYTES`: this keeps fingerprinting a 100 GB checkpoint to seconds, at the
    price that an edit confined to the middle of one large shard, leaving the header
    and both ends byte-identical, goes unnoticed (training changes every tensor, so a
    fine-tune is always caught). A LoRA adapter's fingerprint folds in its base's.

    Hub id: ``hf:<id>@<commit>`` when the revision is in the local Hugging Face
    cache, else ``hf:<id>@<revision or main>`` (unresolved, so less trustworthy).
    """
    source = _resolve(name_or_path)
    if not os.path.isdir(source):
        return f"hf:{source}@{_cached_commit(source, revision) or revision or 'main'}"
    folder = Path(source)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        if path.name.endswith(WEIGHT_SUFFIXES):
            digest.update(_weight_checksum(path))
        elif path.suffix in (".json", ".txt", ".model", ".jinja", ".tiktoken", ".py"):
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    adapter = _adapter_config(source)
    if adapter is not None:
        digest.update(model_fingerprint(adapter["base_model_name_or_path"]).encode())
    return f"sha256:{digest.hexdigest()}"


def _load(auto_cls, name_or_path, *, device, dtype, revision, trust_remote_code, allow_pickle):
    source = _resolve(name_or_path)
    _refuse_remote_code(source, trust_remote_code, revision)
    adapter = _adapter_config(source)
    if adapter is not None:
        return _load_merged_adapter(
            auto_cls,
            source,
            adapter,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
        )
    if os.path.isdir(source):
        _refuse_pickle_only(Path(source), allow_pickle)
    try:
        model, info = auto_cls.from_pretrained(
            source,
            revision=revision,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            output_loading_info=True,
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load {source}: {exc}",
            hint=REMOTE_CODE_HINT
            if "trust_remote_code" in str(exc)
            else "pass a local folder with config.json and *.safetensors weights, "
            "or a Hugging Face model id that is in the local cache",
        ) from exc
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ModelLoadError(
            f"{source} has no weights for {len(missing)} parameters of {type(model).__name__} "
            f"(e.g. {', '.join(missing[:3])}); they would be random",
            hint="check that the checkpoint is the kind of model asked for "
            "(a reward model needs a trained sequence-classification head)",
        )
    _set_pad_token_id(model)
    return model.to(device).eval()


def _load_merged_adapter(auto_cls, source, adapter, *, device, dtype, trust_remote_code, allow_pickle):
    from peft import PeftModel

    folder = Path(source)
    if not (folder / "adapter_model.safetensors").is_file() and not allow_pickle:
        raise ModelLoadError(
            f"refusing to load the adapter in {folder}: no adapter_model.safetensors "
            "(pickle files can run arbitrary code when loaded)",
            hint=PICKLE_HINT,
        )
    base = _load(
        auto_cls,
        adapter["base_model_name_or_path"],
        device=device,
        dtype=dtype,
        revision=None,
        trust_remote_code=trust_remote_code,
        allow_pickle=allow_pickle,
    )
    merged = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
    return merged.to(device).eval()


def _resolve(name_or_path: str | os.PathLike) -> str:
    """The path or hub id to load; a path that does not exist is an error, not a hub lookup."""
    text = os.fspath(name_or_path)
    expanded = os.path.expanduser(text)
    if os.path.exists(expanded):
        return expanded
    looks_local = (
        isinstance(name_or_path, Path)
        or text.startswith(("/", ".", "~"))
        or text.count("/") > 1
        or text.endswith(("/", os.sep))
    )
    if looks_local:
        raise ModelLoadError(
            f"model path not found: {expanded}",
            hint="pass an existing folder with config.json and *.safetensors weights "
            "(or adapter_config.json for a LoRA adapter), or a Hugging Face model id like org/name",
        )
    return text


def _adapter_config(source: str) -> dict[str, Any] | None:
    path = Path(source) / ADAPTER_CONFIG
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    if not config.get("base_model_name_or_path"):
        raise ModelLoadError(
            f"{path} does not name its base model (base_model_name_or_path)",
            hint="set base_model_name_or_path in adapter_config.json to the base model's folder or id",
        )
    return config


def _refuse_pickle_only(folder: Path, allow_pickle: bool) -> None:
    names = [p.name for p in folder.iterdir() if p.is_file()]
    if allow_pickle or any(n.endswith(".safetensors") for n in names):
        return
    pickled = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickled:
        raise ModelLoadError(
            f"refusing to load pickle weights ({', '.join(pickled)}) from {folder}: unpickling can run arbitrary code",
            hint=PICKLE_HINT,
        )


def _refuse_remote_code(source: str, trust_remote_code: bool, revision: str | None) -> None:
    """Refuse, unless trusted, a checkpoint whose configs name Python classes of its own.

    Left to transformers, such a model either fails with a message about an argument
    the user never sees, or (when its model type is built in) loads with the built-in
    class instead of the author's code: a quiet difference in the scores. A local
    folder and a hub id are checked (a hub id's configs fetched first when not cached).
    """
    if trust_remote_code:
        return
    for name in CONFIG_FILES:
        path = _config_file(source, name, revision)
        try:
            config = json.loads(path.read_text("utf-8")) if path is not None else None
        except (OSError, ValueError):
            continue  # a missing or damaged config is for transformers to report
        auto_map = config.get("auto_map") if isinstance(config, dict) else None
        if auto_map:
            # {"AutoModelForCausalLM": "modeling_x.XForCausalLM", "AutoTokenizer": ["repo--tok.T", null]}
            refs = [
                ref
                for value in (auto_map.values() if isinstance(auto_map, dict) else [])
                for ref in (value if isinstance(value, list) else [value])
                if isinstance(ref, str)
            ]
            modules = sorted({ref.split("--")[-1].rsplit(".", 1)[0] + ".py" for ref in refs})
            raise ModelLoadError(
                f"refusing to load {source}: its {name} asks for Python code it ships "
                f"({', '.join(modules) or 'auto_map'}), and remote code is not allowed",
                hint=f"{REMOTE_CODE_HINT}; or, where transformers has the architecture built in, delete "
                f"auto_map from a copy of {name} to load it with transformers' own code",
            )


def _config_file(source: str, name: str, revision: str | None) -> Path | None:
    """`name` of a local model folder or of a hub id (fetched into the cache first if it is
    not there: the small JSON file transformers would fetch anyway); None if there is none."""
    if os.path.isdir(source):
        return Path(source) / name
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    try:
        cached = try_to_load_from_cache(source, name, revision=revision)
        if isinstance(cached, str):
            return Path(cached)
        if cached is not None:  # the cache knows the repo has no such file
            return None
        return Path(hf_hub_download(source, name, revision=revision))
    except (ValueError, OSError, EntryNotFoundError):
        # not a repo id, no such file, offline or unreachable: transformers reports what matters
        return None


def _has_tokenizer_files(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))


def _set_pad_token_id(model) -> None:
    """Sequence classifiers find the last real token through pad_token_id; fall back to eos."""
    config = model.config
    if getattr(config, "pad_token_id", None) is None and getattr(config, "eos_token_id", None) is not None:
        eos = config.eos_token_id
        config.pad_token_id = eos[0] if isinstance(eos, list) else eos


def _weight_checksum(path: Path) -> bytes:
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: handle.read(EDGE_BYTES), b""):
                digest.update(block)
            return digest.digest()
        if path.suffix == ".safetensors":
            header_len = int.from_bytes(handle.read(8), "little")
            digest.update(handle.read(min(header_len, size - 8)))
        handle.seek(0)
        digest.update(handle.read(EDGE_BYTES))
        handle.seek(size - EDGE_BYTES)
        digest.update(handle.read(EDGE_BYTES))
    return digest.digest()


def _cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit a hub revision resolves to in the local cache, or None when not cached."""
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id
        return None
    if not isinstance(path, str):
        return None
    return Path(path).parent.name
