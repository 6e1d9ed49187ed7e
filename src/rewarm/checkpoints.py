"""Base checkpoints as Hugging Face model directories: resolving, initialising, saving, loading.

A model directory holds `config.json`, the weights as `model.safetensors` (or, for a large model,
several `model-0000k-of-0000n.safetensors` with their index `model.safetensors.index.json`, as
transformers shards them) and the tokenizer files, and loads with
`AutoModelForCausalLM.from_pretrained` without `trust_remote_code`. Weights are read from
safetensors; a hub revision that ships only `pytorch_model*.bin` (as Pythia's older revisions do)
is read by transformers with `weights_only=True` and re-saved as safetensors.

Whoever writes a model directory (`select`, `train`, `pretrain`) records the sha256 of its
configuration and weight files in `weights.sha256`, in `sha256sum`'s format (`sha256sum -c
weights.sha256` checks it too); readers verify it, so a truncated or altered file is refused
by name instead of failing deep inside safetensors.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path

import torch

from rewarm import config as cfg
from rewarm import families
from rewarm.data import tokenizer as tok
from rewarm.io import atomic_dir, check_free_space, file_sha256, load_tensors, write_text

log = logging.getLogger(__name__)

MODEL_FILES = ("config.json", "model.safetensors")
"""A model directory's configuration and weights, unsharded (`weight_files` covers sharded ones)."""
WEIGHTS_INDEX = "model.safetensors.index.json"
CHECKSUMS = "weights.sha256"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
OPTIONAL_FILES = ("special_tokens_map.json", "generation_config.json")
# What to fetch from a hub repository: configuration, weights, tokenizer; nothing else (`hub_patterns`
# leaves the .bin weights out when the revision also has safetensors).
HUB_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json",
                "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"]
BIN_PATTERNS = ("pytorch_model*.bin", "pytorch_model.bin.index.json")
SERIES = "series.json"


class CheckpointError(ValueError):
    """A model directory that is missing files or is not a causal LM transformers knows natively."""


def model_class(model_type: str, where: str = "config.json"):
    """The transformers class of a causal LM that the installed transformers knows natively (its
    `AutoModelForCausalLM` mapping: GPT-NeoX, Llama, Qwen2 and 3, OLMo and OLMo 2, Mistral, Gemma, ...);
    no remote code is ever run, so any other `model_type` is refused, naming it."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if name is None:
        known = ", ".join(t for t in ("gpt_neox", "llama", "qwen2", "qwen3", "olmo", "olmo2", "mistral", "gemma")
                          if t in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
        raise CheckpointError(f"{where}: model_type {model_type!r} is not a causal LM that transformers {transformers.__version__} "
                              f"knows natively (rewarm runs no remote code); it knows {len(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)}, "
                              f"among them {known}")
    return getattr(transformers, name)


def architecture(model: cfg.ModelConfig, vocab_size: int, **special_tokens):
    """The transformers config of the `model` section's family and shape, with `vocab_size` embedding rows
    (for GPT-NeoX, Pythia's architecture)."""
    from transformers import AutoConfig

    return AutoConfig.for_model(model.model_type, **families.config_fields(model, vocab_size), **special_tokens)


def model_architecture(model: cfg.ModelConfig, tokenizer):
    """The `model` section's architecture with the tokenizer's vocabulary and special tokens."""
    return architecture(
        model,
        _padded(len(tokenizer)),
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _padded(vocab: int, multiple: int = 64) -> int:
    """Embedding rows rounded up to a multiple of 64, as Pythia pads 50,277 tokens to 50,304."""
    return -(-vocab // multiple) * multiple


def parameter_count(model_config) -> int:
    """Parameters of a model configuration (any family `model_class` knows), counted on the meta
    device (no memory allocated)."""
    with torch.device("meta"):
        model = model_class(model_config.model_type)(model_config)
    return sum(p.numel() for p in model.parameters())


def weights_bytes(path: str | Path) -> int:
    """Size of a model directory's files (the weights dominate)."""
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())


def init_model(model_config, seed: int, init: str = "hf"):
    """A freshly initialised causal LM of `model_config`'s family; the same seed gives the same weights.
    `init`: hf (the family's own initialisation in transformers: normal(0, 0.02) for GPT-NeoX) or gpt-neox
    (`gpt_neox_init`, GPT-NeoX models only)."""
    if init == "gpt-neox" and model_config.model_type != "gpt_neox":
        raise CheckpointError(f"init: gpt-neox is GPT-NeoX's initialisation; a {model_config.model_type} model takes init: hf")
    torch.manual_seed(seed)
    model = model_class(model_config.model_type)(model_config).float()
    if init == "gpt-neox":
        gpt_neox_init(model)
    return model


OUTPUT_PROJECTIONS = ("attention.dense", "mlp.dense_4h_to_h")
"""The layers GPT-NeoX initialises with its `output_layer_init_method`: each block's writes to the residual stream."""


def gpt_neox_init(model) -> None:
    """GPT-NeoX's initialisation as the papers' 410M runs set it ([NX] configs/iclr_models/410M.yml: init_method
    small_init, output_layer_init_method wang_init; megatron/model/init_functions.py), with d the hidden size
    and L the layers: every weight matrix (embeddings, attention input, MLP input, output layer) normal(0,
    sqrt(2 / (5 d))) (small_init, Nguyen and Salazar 2019); the attention and MLP output projections normal(0,
    2 / (L sqrt(d))) (wang_init); biases 0, LayerNorms 1 and 0."""
    d, layers = model.config.hidden_size, model.config.num_hidden_layers
    small, wang = math.sqrt(2 / (5 * d)), 2 / layers / math.sqrt(d)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(0.0, wang if name.endswith(OUTPUT_PROJECTIONS) else small)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()


def unwrap(model):
    """The model itself, out of DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


MAX_SHARD_SIZE = os.environ.get("REWARM_MAX_SHARD_SIZE", "5GB")
"""Largest safetensors file of a saved model: larger weights are split into several with their index
(transformers' own default is 50GB, which leaves a 12B model's 48 GB in one file; 5GB is the hub's
usual size). The environment variable REWARM_MAX_SHARD_SIZE sets it (e.g. "2GB", or "100KB" in tests)."""


def save_model_dir(model, tokenizer_dir: str | Path, out_dir: str | Path) -> None:
    """Weights as safetensors (sharded with an index above MAX_SHARD_SIZE, as transformers does),
    configuration, tokenizer files and the checksums of configuration and weights: a loadable,
    verifiable HF directory."""
    out_dir = Path(out_dir)
    unwrap(model).config.use_cache = False  # see disable_cache
    unwrap(model).save_pretrained(str(out_dir), safe_serialization=True, max_shard_size=MAX_SHARD_SIZE)
    copy_tokenizer(tokenizer_dir, out_dir)
    write_checksums(out_dir)


def disable_cache(model_dir: str | Path) -> None:
    """`use_cache: false` in a model directory's config.json (its checksum updated; the weights are not hashed
    again). Pythia's configuration asks for a key/value cache on every forward pass, about 0.3 GB a sequence at
    410M: the harness's log-likelihood passes would build one at their batch. Generation still caches (its
    generation config asks for it, as the harness does)."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text())
    if config.get("use_cache") is False:
        return
    config["use_cache"] = False
    write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    recorded = {name: digest for digest, name in (line.split("  ", 1) for line in (model_dir / CHECKSUMS).read_text().splitlines())}
    write_checksums(model_dir, {**recorded, "config.json": file_sha256(config_path)})


def copy_tokenizer(tokenizer_dir: str | Path, out_dir: str | Path) -> None:
    for name in TOKENIZER_FILES + OPTIONAL_FILES[:1]:
        source = Path(tokenizer_dir) / name
        if source.exists():
            shutil.copy2(source, Path(out_dir) / name)


def weight_files(path: str | Path) -> list[str]:
    """The configuration and weight files of a model directory, by name: config.json and
    model.safetensors, or config.json, the index and every shard it names."""
    path = Path(path)
    if not (path / WEIGHTS_INDEX).is_file():
        return list(MODEL_FILES)
    try:
        shards = sorted(set(json.loads((path / WEIGHTS_INDEX).read_text())["weight_map"].values()))
    except (json.JSONDecodeError, KeyError, AttributeError) as error:
        raise CheckpointError(f"{path / WEIGHTS_INDEX}: not a safetensors index with a weight_map ({error})") from None
    return ["config.json", WEIGHTS_INDEX, *shards]


def write_checksums(path: str | Path, digests: dict[str, str] | None = None) -> None:
    """Record the sha256 of the configuration and weight files in `weights.sha256` (sha256sum's format):
    `digests` by name when the caller has them (files copied from a verified directory), else hashed."""
    path = Path(path)
    digests = digests or {name: file_sha256(path / name) for name in weight_files(path)}
    write_text(path / CHECKSUMS, "".join(f"{digest}  {name}\n" for name, digest in digests.items()))


def verify_weights(path: str | Path) -> dict[str, str]:
    """Refuse, naming the file, a model directory whose weights are missing, altered or truncated:
    against `weights.sha256` where its writer recorded one; otherwise (a directory from elsewhere)
    by reading each safetensors file's header and checking the data it declares is all there.
    Returns each configuration and weight file's sha256, by name."""
    path = Path(path)
    names = weight_files(path)
    missing = [name for name in names if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"{path}: missing {', '.join(missing)}")
    if (path / CHECKSUMS).is_file():
        recorded = {}
        for number, line in enumerate((path / CHECKSUMS).read_text().splitlines(), 1):
            digest, _, name = line.partition("  ")
            if len(digest) != 64 or not name:
                raise CheckpointError(f"{path / CHECKSUMS}, line {number}: not a sha256sum line: {line[:80]!r}")
            recorded[name] = digest
        for name in names:
            if name not in recorded:
                raise CheckpointError(f"{path / name}: not in {CHECKSUMS} (the directory was changed after it was written)")
            if file_sha256(path / name) != recorded[name]:
                raise CheckpointError(f"{path / name}: altered or truncated (its sha256 differs from {CHECKSUMS}); "
                                      f"re-create it (rewarm select, or re-run the stage that wrote it)")
        return {name: recorded[name] for name in names}
    from safetensors import safe_open

    for name in names:
        if not name.endswith(".safetensors"):
            continue
        try:
            with safe_open(str(path / name), framework="pt") as weights:
                weights.keys()
        except Exception as error:  # safetensors raises its own SafetensorError, and OSError
            raise CheckpointError(f"{path / name}: unreadable safetensors file ({error}); truncated or not safetensors") from None
    return {name: file_sha256(path / name) for name in names}


def check_model_dir(path: str | Path) -> dict:
    """Raise CheckpointError unless `path` is a complete GPT-NeoX model directory; return its config."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory")
    missing = [name for name in ("config.json", *TOKENIZER_FILES) if not (path / name).is_file()]
    if not (path / "model.safetensors").is_file() and not (path / WEIGHTS_INDEX).is_file():
        missing.append(f"model.safetensors (or {WEIGHTS_INDEX} and its shards)")
    if missing:
        raise CheckpointError(f"{path}: missing {', '.join(missing)} (a model directory needs {', '.join(MODEL_FILES + TOKENIZER_FILES)})")
    return read_model_config(path)


def check_fits(path: str | Path, tokenizer, seq_len: int | None = None, what: str = "the shards' sequences") -> None:
    """Refuse a model directory that cannot read these tokens: an embedding with fewer rows than the
    tokenizer has ids (an IndexError deep in the forward pass otherwise), or a context shorter than
    `seq_len`. Train, evaluate and benchmark check it before loading the weights."""
    path = Path(path)
    config = check_model_dir(path)
    if config["vocab_size"] < tok.vocab_size(tokenizer):
        raise CheckpointError(f"{path}: embedding has {config['vocab_size']} rows, fewer than the tokenizer's {tok.vocab_size(tokenizer)} ids")
    if seq_len is not None and config["max_position_embeddings"] < seq_len:
        raise CheckpointError(f"{path}: context of {config['max_position_embeddings']} tokens (max_position_embeddings) is shorter "
                              f"than {what} ({seq_len} tokens, prepare.seq_len)")


def read_model_config(path: Path) -> dict:
    """A model directory's config.json, refused unless it is a causal LM transformers knows natively
    (`model_class`)."""
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path / 'config.json'}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path / 'config.json'}: not a model configuration (a JSON object)")
    model_class(config.get("model_type"), str(path / "config.json"))
    return config


def load_model(path: str | Path, device: torch.device | str = "cpu", verify: bool = True):
    """Load a checked model directory (safetensors only, sharded or not, no remote code) in float32,
    its weights verified first (`verify=False`: the caller just did, with `weights_fingerprint`)."""
    config = check_model_dir(path)
    if verify:
        verify_weights(path)
    model, info = model_class(config["model_type"]).from_pretrained(str(path), use_safetensors=True, dtype=torch.float32, attn_implementation="sdpa",
                                                     output_loading_info=True, ignore_mismatched_sizes=True)
    _refuse_mismatch(path, info)
    return model.to(device)


def skeleton(config):
    """A model of `config`'s shape on the meta device: no memory, no weights (FSDP's processes other than
    rank 0 shard this and receive their shards of rank 0's weights; `runtime.shard_with_weights`)."""
    with torch.device("meta"):
        return model_class(config.model_type)._from_config(config, dtype=torch.float32, attn_implementation="sdpa")


def model_skeleton(path: str | Path):
    """`skeleton` of a checked model directory's configuration (its weights are not read)."""
    from transformers import AutoConfig

    check_model_dir(path)
    return skeleton(AutoConfig.from_pretrained(str(path), trust_remote_code=False))


def check_weights_match_config(path: str | Path) -> None:
    """Refuse a model directory whose weights miss, add or misshape tensors against its config.json.
    The model is loaded for real on the CPU, as training will load it: transformers renames checkpoint
    keys on load (GPT-NeoX's `embed_out` is its `lm_head`), so only its own loader can say which tensors
    match. (It cannot load onto the meta device.) This holds the model in float32 once, within
    `plan.select_memory_mb`."""
    model, info = model_class(read_model_config(Path(path))["model_type"]).from_pretrained(str(path), use_safetensors=True, dtype=torch.float32,
                                                     output_loading_info=True, ignore_mismatched_sizes=True)
    del model
    _refuse_mismatch(path, info)


def _refuse_mismatch(path, info: dict) -> None:
    # transformers only reports these and initialises missing tensors at random: a model with a layer missing
    # would be trained and evaluated as if it were whole.
    wrong = {kind: sorted(str(item[0] if isinstance(item, tuple) else item) for item in info.get(key) or ()) for kind, key in
             (("missing", "missing_keys"), ("unexpected", "unexpected_keys"), ("of the wrong shape", "mismatched_keys"))}
    if any(wrong.values()):
        listed = "; ".join(f"{kind}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''} ({len(names)})"
                           for kind, names in wrong.items() if names)
        raise CheckpointError(f"{path}: its weights do not match config.json: tensors {listed}")


def weights_fingerprint(path: str | Path) -> str:
    """sha256 of a model directory's configuration and weights (verified: `verify_weights`)."""
    digest = hashlib.sha256()
    for file_digest in verify_weights(path).values():
        digest.update(file_digest.encode())
    return digest.hexdigest()


# -- select -----------------------------------------------------------------------------------


def select(
    config: cfg.Config, name: str, out_dir: str | Path, tokenizer_dir: str | Path, pretrain_dir: str | Path | None = None,
    run_dir: str | Path | None = None,
) -> None:
    """The `select` stage: resolve checkpoint `name` from the configuration into `out_dir`. A checkpoint
    of type `cell` is that cell's final model (`run_dir`/model), with its optimizer state when asked."""
    if name not in config.checkpoints:
        raise cfg.ConfigError(f"checkpoint {name!r} is not in the configuration (have: {', '.join(config.checkpoints)})")
    spec = config.checkpoints[name]
    if isinstance(spec, cfg.ScratchCheckpoint) and spec.config is None:
        needed = 4 * parameter_count(model_architecture(config.model, tok.load(tokenizer_dir)))  # float32 safetensors
        check_free_space(out_dir, needed, f"select {name}")
    elif isinstance(spec, cfg.LocalCheckpoint) and Path(spec.path).is_dir():
        check_free_space(out_dir, weights_bytes(spec.path), f"select {name}")
    with atomic_dir(out_dir, "select") as tmp:
        if isinstance(spec, cfg.HubCheckpoint):
            snapshot = fetch_hub(spec, tmp)
            check_free_space(out_dir, weights_bytes(snapshot), f"select {name}")
            materialize(snapshot, tmp)
        elif isinstance(spec, cfg.LocalCheckpoint):
            materialize(Path(spec.path), tmp)
        elif isinstance(spec, cfg.PretrainCheckpoint):
            if pretrain_dir is None:
                raise CheckpointError(f"checkpoint {name!r} comes from pre-training: pass the pre-training directory (--pretrain)")
            materialize(pretrain_revision(pretrain_dir, spec.revision), tmp)
        elif isinstance(spec, cfg.CellCheckpoint):
            if run_dir is None:
                raise CheckpointError(f"checkpoint {name!r} continues cell {spec.cell}: pass its run directory (--run)")
            materialize(Path(run_dir) / "model", tmp)
            if spec.optimizer:
                copy_optimizer_state(Path(run_dir) / "model", tmp)
        else:
            init_scratch(spec, config.model, tokenizer_dir, tmp)
        check_model_dir(tmp)
        if isinstance(spec, (cfg.HubCheckpoint, cfg.LocalCheckpoint)):  # from elsewhere: its weights against its config.json
            check_weights_match_config(tmp)
        disable_cache(tmp)


OPTIMIZER_STATE = "optimizer.pt"
"""A run's final optimizer state (torch.save of the optimizer's state_dict), kept in its model directory
when a `cell` checkpoint continues it with that state; its SHA-256 is in OPTIMIZER_CHECKSUM beside it."""
OPTIMIZER_CHECKSUM = "optimizer.sha256"


def save_optimizer_state(state: dict, out_dir: Path) -> None:
    """Write an optimizer state_dict into a model directory, with its checksum."""
    torch.save(state, out_dir / OPTIMIZER_STATE)
    (out_dir / OPTIMIZER_CHECKSUM).write_text(file_sha256(out_dir / OPTIMIZER_STATE) + "\n")


def _verified_optimizer_state(model_dir: Path) -> Path | None:
    """The optimizer state file of a model directory (None when it has none), checked against its checksum."""
    path, checksum = Path(model_dir) / OPTIMIZER_STATE, Path(model_dir) / OPTIMIZER_CHECKSUM
    if not path.is_file():
        return None
    if not checksum.is_file() or checksum.read_text().strip() != file_sha256(path):
        raise CheckpointError(f"{path}: optimizer state does not match its checksum ({OPTIMIZER_CHECKSUM}): truncated or altered")
    return path


def load_optimizer_state(model_dir: Path) -> dict | None:
    """The optimizer state kept in a model directory (None when it has none), checked against its
    checksum and read with torch.load(weights_only=True): tensors and numbers only, no code."""
    path = _verified_optimizer_state(model_dir)
    return None if path is None else load_tensors(path)


def copy_optimizer_state(source: Path, out_dir: Path) -> None:
    """Copy a run's optimizer state (verified, not loaded) into a checkpoint directory."""
    if _verified_optimizer_state(source) is None:
        raise CheckpointError(f"{source}: no {OPTIMIZER_STATE}: the run did not keep its optimizer state (it keeps it when a "
                              f"checkpoint of type cell with optimizer: true continues it; re-run that cell)")
    for name in (OPTIMIZER_STATE, OPTIMIZER_CHECKSUM):
        shutil.copy2(source / name, out_dir / name)


def pretrain_revision(pretrain_dir: str | Path, revision: str) -> Path:
    """The directory of a revision (`step<N>` or `final`) of the pre-training series."""
    series = json.loads((Path(pretrain_dir) / SERIES).read_text())
    step = series["final"] if revision == "final" else revision
    if step not in series["revisions"]:
        raise CheckpointError(f"{pretrain_dir}: no revision {revision!r} (have: {', '.join(series['revisions'])}, final)")
    return Path(pretrain_dir) / step


def materialize(source: Path, out_dir: Path) -> None:
    """Copy a model directory (its safetensors weights, sharded or not, verified first); weights only
    in pytorch_model*.bin are converted to safetensors. The copy gets its checksums."""
    if not source.is_dir():
        raise CheckpointError(f"{source}: not a directory")
    if (source / "model.safetensors").is_file() or (source / WEIGHTS_INDEX).is_file():
        check_model_dir(source)
        digests = verify_weights(source)
        for name in [*digests, *TOKENIZER_FILES, *OPTIONAL_FILES]:
            if (source / name).is_file():
                shutil.copy2(source / name, out_dir / name)
        write_checksums(out_dir, digests)  # the copies are the verified files: no second hashing
        return
    if not (source / "config.json").is_file() or not list(source.glob("pytorch_model*.bin")):
        check_model_dir(source)  # raises, naming what is missing
    from transformers import AutoModelForCausalLM

    read_model_config(source)
    # transformers reads .bin files with torch.load(weights_only=True); no remote code.
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32, trust_remote_code=False)
    except (OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{source}: its pytorch_model*.bin weights do not load ({error})") from None
    model.save_pretrained(str(out_dir), safe_serialization=True)
    for name in TOKENIZER_FILES + OPTIONAL_FILES[:1]:
        if (source / name).is_file():
            shutil.copy2(source / name, out_dir / name)
    write_checksums(out_dir)


def hub_patterns(repo_files: list[str]) -> list[str]:
    """What to download of a hub revision whose files are `repo_files`: HUB_PATTERNS, without the
    pytorch_model*.bin weights when the revision also has safetensors weights (Pythia's revisions
    carry both; the .bin copy would double the download)."""
    if any(name.endswith(".safetensors") for name in repo_files):
        return [p for p in HUB_PATTERNS if p not in BIN_PATTERNS]
    return list(HUB_PATTERNS)


def hub_download_bytes(planned, patterns: list[str]) -> int:
    """Bytes still to download: the files of a dry run (`DryRunFileInfo`: filename, file_size,
    will_download) that match `patterns` and are not cached yet (unknown sizes count 0)."""
    from fnmatch import fnmatch

    return sum(f.file_size or 0 for f in planned if f.will_download and any(fnmatch(f.filename, p) for p in patterns))


def fetch_hub(spec: cfg.HubCheckpoint, out_dir: Path) -> Path:
    """Download a hub revision's configuration, weights (safetensors only where it has them) and
    tokenizer into the hub cache, after checking the free space for what is not cached yet (a dry
    run lists the files and their sizes); offline, the cached snapshot as it is. Returns the snapshot."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import DryRunError, OfflineModeIsEnabled

    try:
        planned = snapshot_download(spec.repo_id, revision=spec.revision, allow_patterns=HUB_PATTERNS, dry_run=True)
    except (DryRunError, OfflineModeIsEnabled):
        log.info("hub unreachable: %s at revision %s from the local cache", spec.repo_id, spec.revision)
        return Path(snapshot_download(spec.repo_id, revision=spec.revision, allow_patterns=HUB_PATTERNS, local_files_only=True))
    patterns = hub_patterns([f.filename for f in planned])
    needed = hub_download_bytes(planned, patterns)
    check_free_space(constants.HF_HUB_CACHE, needed, f"download of {spec.repo_id}@{spec.revision}")
    log.info("fetching %s at revision %s (%.2f GB to download)", spec.repo_id, spec.revision, needed / 1e9)
    return Path(snapshot_download(spec.repo_id, revision=spec.revision, allow_patterns=patterns))


def init_scratch(spec: cfg.ScratchCheckpoint, model_cfg: cfg.ModelConfig, tokenizer_dir: str | Path, out_dir: Path) -> None:
    """The from-scratch baseline: the architecture of `spec.config` (or the `model` section), new weights."""
    tokenizer = tok.load(tokenizer_dir)
    if spec.config is None:
        gpt_config = model_architecture(model_cfg, tokenizer)
    else:
        from transformers import AutoConfig

        gpt_config = AutoConfig.from_pretrained(spec.config, revision=spec.revision, trust_remote_code=False)
        model_class(gpt_config.model_type, spec.config)
    save_model_dir(init_model(gpt_config, spec.seed, spec.init), tokenizer_dir, out_dir)
