"""Base checkpoints as Hugging Face model directories: resolving, initialising, saving, loading.

A model directory holds `config.json`, `model.safetensors` and the tokenizer files, and
loads with `AutoModelForCausalLM.from_pretrained` without `trust_remote_code`. Weights
are read from safetensors; a hub revision that ships only `pytorch_model.bin` (as
Pythia's older revisions do) is read by transformers with `weights_only=True` and
re-saved as safetensors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import torch

from rewarm import config as cfg
from rewarm.io import atomic_dir, check_free_space

log = logging.getLogger(__name__)

MODEL_FILES = ("config.json", "model.safetensors")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
OPTIONAL_FILES = ("special_tokens_map.json", "generation_config.json")
# What to fetch from a hub repository: configuration, weights, tokenizer; nothing else.
HUB_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json",
                "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]
SERIES = "series.json"


class CheckpointError(ValueError):
    """A model directory that is missing files or is not a GPT-NeoX causal LM."""


def neox_architecture(model: cfg.ModelConfig, vocab_size: int, **special_tokens):
    """The GPT-NeoX (Pythia) architecture of the `model` section, with `vocab_size` embedding rows."""
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=model.hidden_size,
        num_hidden_layers=model.num_layers,
        num_attention_heads=model.num_heads,
        intermediate_size=model.intermediate_size,
        max_position_embeddings=model.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": model.rotary_fraction},
        use_parallel_residual=True,  # Pythia: attention and MLP in parallel
        tie_word_embeddings=False,  # Pythia: untied input and output embeddings
        **special_tokens,
    )


def gpt_neox_config(model: cfg.ModelConfig, tokenizer):
    """The demo's architecture with the tokenizer's vocabulary and special tokens."""
    return neox_architecture(
        model,
        _padded(len(tokenizer)),
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _padded(vocab: int, multiple: int = 64) -> int:
    """Embedding rows rounded up to a multiple of 64, as Pythia pads 50,277 tokens to 50,304."""
    return -(-vocab // multiple) * multiple


def parameter_count(gpt_config) -> int:
    """Parameters of a GPT-NeoX configuration, counted on the meta device (no memory allocated)."""
    from transformers import GPTNeoXForCausalLM

    with torch.device("meta"):
        model = GPTNeoXForCausalLM(gpt_config)
    return sum(p.numel() for p in model.parameters())


def weights_bytes(path: str | Path) -> int:
    """Size of a model directory's files (the weights dominate)."""
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())


def init_model(gpt_config, seed: int):
    """A freshly initialised GPT-NeoX causal LM; the same seed gives the same weights."""
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(gpt_config)
    return model.float()


def unwrap(model):
    """The model itself, out of DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def save_model_dir(model, tokenizer_dir: str | Path, out_dir: str | Path) -> None:
    """Weights as safetensors, configuration and tokenizer files: a loadable HF directory."""
    out_dir = Path(out_dir)
    unwrap(model).save_pretrained(str(out_dir), safe_serialization=True)
    copy_tokenizer(tokenizer_dir, out_dir)


def copy_tokenizer(tokenizer_dir: str | Path, out_dir: str | Path) -> None:
    for name in TOKENIZER_FILES + OPTIONAL_FILES[:1]:
        source = Path(tokenizer_dir) / name
        if source.exists():
            shutil.copy2(source, Path(out_dir) / name)


def check_model_dir(path: str | Path) -> dict:
    """Raise CheckpointError unless `path` is a complete GPT-NeoX model directory; return its config."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory")
    missing = [name for name in MODEL_FILES + TOKENIZER_FILES if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"{path}: missing {', '.join(missing)} (a model directory needs {', '.join(MODEL_FILES + TOKENIZER_FILES)})")
    return read_gpt_neox_config(path)


def read_gpt_neox_config(path: Path) -> dict:
    """A model directory's config.json, refused unless it is a GPT-NeoX (Pythia) model."""
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path / 'config.json'}: not valid JSON ({error})") from None
    if config.get("model_type") != "gpt_neox":
        raise CheckpointError(f"{path / 'config.json'}: model_type {config.get('model_type')!r}, expected 'gpt_neox' (Pythia's architecture)")
    return config


def load_model(path: str | Path, device: torch.device | str = "cpu"):
    """Load a checked model directory (safetensors only, no remote code) in float32."""
    from transformers import GPTNeoXForCausalLM

    check_model_dir(path)
    model = GPTNeoXForCausalLM.from_pretrained(str(path), use_safetensors=True, dtype=torch.float32, attn_implementation="sdpa")
    return model.to(device)


def weights_fingerprint(path: str | Path) -> str:
    """sha256 of a model directory's configuration and weights."""
    from rewarm.data.sources import file_sha256

    digest = hashlib.sha256()
    for name in MODEL_FILES:
        digest.update(file_sha256(Path(path) / name).encode())
    return digest.hexdigest()


# -- select -----------------------------------------------------------------------------------


def select(
    config: cfg.Config, name: str, out_dir: str | Path, tokenizer_dir: str | Path, pretrain_dir: str | Path | None = None
) -> None:
    """The `select` stage: resolve checkpoint `name` from the configuration into `out_dir`."""
    if name not in config.checkpoints:
        raise cfg.ConfigError(f"checkpoint {name!r} is not in the configuration (have: {', '.join(config.checkpoints)})")
    spec = config.checkpoints[name]
    if isinstance(spec, cfg.ScratchCheckpoint) and spec.config is None:
        from rewarm.data import tokenizer as tok

        needed = 4 * parameter_count(gpt_neox_config(config.model, tok.load(tokenizer_dir)))  # float32 safetensors
        check_free_space(out_dir, needed, f"select {name}")
    elif isinstance(spec, cfg.LocalCheckpoint) and Path(spec.path).is_dir():
        check_free_space(out_dir, weights_bytes(spec.path), f"select {name}")
    with atomic_dir(out_dir) as tmp:
        if isinstance(spec, cfg.HubCheckpoint):
            from huggingface_hub import snapshot_download

            log.info("fetching %s at revision %s", spec.repo_id, spec.revision)
            snapshot = snapshot_download(spec.repo_id, revision=spec.revision, allow_patterns=HUB_PATTERNS)
            materialize(Path(snapshot), tmp)
        elif isinstance(spec, cfg.LocalCheckpoint):
            materialize(Path(spec.path), tmp)
        elif isinstance(spec, cfg.PretrainCheckpoint):
            if pretrain_dir is None:
                raise CheckpointError(f"checkpoint {name!r} comes from pre-training: pass the pre-training directory (--pretrain)")
            materialize(pretrain_revision(pretrain_dir, spec.revision), tmp)
        else:
            init_scratch(spec, config.model, tokenizer_dir, tmp)
        check_model_dir(tmp)


def pretrain_revision(pretrain_dir: str | Path, revision: str) -> Path:
    """The directory of a revision (`step<N>` or `final`) of the pre-training series."""
    series = json.loads((Path(pretrain_dir) / SERIES).read_text())
    step = series["final"] if revision == "final" else revision
    if step not in series["revisions"]:
        raise CheckpointError(f"{pretrain_dir}: no revision {revision!r} (have: {', '.join(series['revisions'])}, final)")
    return Path(pretrain_dir) / step


def materialize(source: Path, out_dir: Path) -> None:
    """Copy a model directory; weights only in pytorch_model.bin are converted to safetensors."""
    if not source.is_dir():
        raise CheckpointError(f"{source}: not a directory")
    if (source / "model.safetensors").is_file():
        for name in MODEL_FILES + TOKENIZER_FILES + OPTIONAL_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, out_dir / name)
        return
    if not (source / "config.json").is_file() or not list(source.glob("pytorch_model*.bin")):
        check_model_dir(source)  # raises, naming what is missing
    from transformers import AutoModelForCausalLM

    read_gpt_neox_config(source)
    # transformers reads .bin files with torch.load(weights_only=True); no remote code.
    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32, trust_remote_code=False)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    for name in TOKENIZER_FILES + OPTIONAL_FILES[:1]:
        if (source / name).is_file():
            shutil.copy2(source / name, out_dir / name)


def init_scratch(spec: cfg.ScratchCheckpoint, model_cfg: cfg.ModelConfig, tokenizer_dir: str | Path, out_dir: Path) -> None:
    """The from-scratch baseline: the architecture of `spec.config` (or the `model` section), new weights."""
    from rewarm.data import tokenizer as tok

    tokenizer = tok.load(tokenizer_dir)
    if spec.config is None:
        gpt_config = gpt_neox_config(model_cfg, tokenizer)
    else:
        from transformers import AutoConfig

        gpt_config = AutoConfig.from_pretrained(spec.config, revision=spec.revision, trust_remote_code=False)
        if gpt_config.model_type != "gpt_neox":
            raise CheckpointError(f"{spec.config}: model_type {gpt_config.model_type!r}, expected 'gpt_neox'")
    save_model_dir(init_model(gpt_config, spec.seed), tokenizer_dir, out_dir)
