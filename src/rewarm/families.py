"""Model families: what rewarm needs to know of an architecture beyond what transformers builds.

The `model` section names a family by transformers' `model_type` and gives its shape; this module turns
that into the keyword arguments of the family's transformers config (for `scratch` checkpoints and the
demo's pre-training) and counts its parameters by formula, so that `rewarm plan` and parsing the
Snakefile import no torch. One `Family` row per architecture: adding one is a row here, checked by
tests/test_families.py against the model transformers builds.
"""

from __future__ import annotations

from dataclasses import dataclass

from rewarm.config.schema import ModelConfig


@dataclass(frozen=True)
class Family:
    """How one family's decoder layer is made, as far as its parameter count goes."""

    layer_norm: bool
    """LayerNorm (weight and bias: 2 x hidden) rather than RMSNorm (weight only: hidden)."""
    linear_bias: bool
    """Every projection of attention and MLP has a bias (GPT-NeoX)."""
    qkv_bias: bool
    """Only the query, key and value projections have biases (Qwen2)."""
    gated_mlp: bool
    """SwiGLU: gate, up and down projections (three matrices) rather than up and down (two)."""
    qk_norm: str
    """Norms on queries and keys: "" none, "whole" (OLMo 2: over all heads' dimensions), "head" (Qwen3: one
    head's dimensions, shared by the heads)."""


FAMILIES = {
    # Biderman et al. 2023 (Pythia): LayerNorms, biases everywhere, a 4x MLP, parallel attention and MLP.
    "gpt_neox": Family(layer_norm=True, linear_bias=True, qkv_bias=False, gated_mlp=False, qk_norm=""),
    # Touvron et al. 2023: RMSNorm, no biases, SwiGLU; Mistral's layer is the same.
    "llama": Family(layer_norm=False, linear_bias=False, qkv_bias=False, gated_mlp=True, qk_norm=""),
    "mistral": Family(layer_norm=False, linear_bias=False, qkv_bias=False, gated_mlp=True, qk_norm=""),
    # Qwen2: Llama's layer with biases on the query, key and value projections.
    "qwen2": Family(layer_norm=False, linear_bias=False, qkv_bias=True, gated_mlp=True, qk_norm=""),
    # Qwen3: no biases, an RMSNorm over each head's queries and keys.
    "qwen3": Family(layer_norm=False, linear_bias=False, qkv_bias=False, gated_mlp=True, qk_norm="head"),
    # OLMo 2 (OLMo et al. 2024, "2 OLMo 2 Furious"): norms after attention and MLP, QK-norm over all heads.
    "olmo2": Family(layer_norm=False, linear_bias=False, qkv_bias=False, gated_mlp=True, qk_norm="whole"),
}


def head_dim(model: ModelConfig) -> int:
    """Dimensions per attention head: the section's head_dim, or hidden_size / num_heads."""
    return model.head_dim or model.hidden_size // model.num_heads


def kv_heads(model: ModelConfig) -> int:
    return model.num_kv_heads or model.num_heads


def block_parameters(model: ModelConfig) -> int:
    """Parameters of one decoder layer: attention (queries and output over all heads, keys and values over
    the key-value heads), the MLP, two norms, and the family's biases and QK-norms."""
    family = FAMILIES[model.model_type]
    h, i, d = model.hidden_size, model.intermediate_size, head_dim(model)
    q, kv = model.num_heads * d, kv_heads(model) * d
    attention = h * q + 2 * h * kv + q * h
    mlp = (3 if family.gated_mlp else 2) * h * i
    norms = 2 * (2 * h if family.layer_norm else h)
    biases = (q + 2 * kv + h + i + h) if family.linear_bias else (q + 2 * kv) if family.qkv_bias else 0
    qk_norm = {"": 0, "whole": q + kv, "head": 2 * d}[family.qk_norm]
    return attention + mlp + norms + biases + qk_norm


def root_parameters(model: ModelConfig, vocab_size: int) -> int:
    """Parameters outside the decoder layers: the input embedding, the output layer unless tied to it (no
    bias), and the final norm. FSDP's root unit holds them."""
    family = FAMILIES[model.model_type]
    embeddings = (1 if model.tie_word_embeddings else 2) * vocab_size * model.hidden_size
    return embeddings + (2 if family.layer_norm else 1) * model.hidden_size


def parameter_count(model: ModelConfig, vocab_size: int) -> int:
    """Exact parameters of the model the `model` section describes, with `vocab_size` embedding rows."""
    return root_parameters(model, vocab_size) + model.num_layers * block_parameters(model)


def config_fields(model: ModelConfig, vocab_size: int) -> dict:
    """Keyword arguments of the family's transformers config (`AutoConfig.for_model(model_type, ...)`)."""
    fields = dict(vocab_size=vocab_size, hidden_size=model.hidden_size, num_hidden_layers=model.num_layers,
                  num_attention_heads=model.num_heads, intermediate_size=model.intermediate_size,
                  max_position_embeddings=model.max_position_embeddings, tie_word_embeddings=model.tie_word_embeddings)
    rope = {"rope_type": "default", "rope_theta": model.rope_theta}
    if model.model_type == "gpt_neox":
        # Pythia: a quarter of each head rotated, attention and MLP in parallel.
        return {**fields, "rope_parameters": {**rope, "partial_rotary_factor": model.rotary_fraction}, "use_parallel_residual": True}
    return {**fields, "rope_parameters": rope, "num_key_value_heads": kv_heads(model), "head_dim": head_dim(model)}
