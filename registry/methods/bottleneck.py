"""Bottleneck adapters written by us: ``houlsby``, ``pfeiffer``, ``parallel``, ``scaled_parallel``.

Papers:

* Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP" (ICML): a bottleneck
  adapter after the attention output projection and another after the FFN output projection,
  inserted before the residual connection + LayerNorm; the up-projection is zero-initialised
  so that a fresh adapter is exactly the identity.
* Pfeiffer et al. 2021, "AdapterFusion: Non-Destructive Task Composition for Transfer
  Learning" (EACL): a single adapter after the FFN.
* He et al. 2022, "Towards a Unified View of Parameter-Efficient Transfer Learning" (ICLR):
  a parallel adapter next to the FFN, ``FFN(x) + s * A(x)`` (``scaled_parallel``: s = 4).
* Rücklé et al. 2021, "AdapterDrop": ``skip_layers`` leaves the lowest k layers without
  adapters; as the base is frozen and nothing below the lowest adapter needs a gradient,
  autograd records no graph there and backward stops early.
* ``base_dropout=False`` (our option, no paper): the frozen base runs without dropout while the
  adapters train. Attention dropout keeps PyTorch's scaled-dot-product attention off its fused
  kernels and every dropout costs a mask in forward and backward; on the 2-core CPU this took
  Houlsby in every layer from 0.71x to 0.52-0.56x of full fine-tuning's step time, with the same
  accuracy over five seeds (+0.06 point, docs/benchmarks.md).
* Ben Zaken et al. 2022, "BitFit": ``train_biases`` also trains the frozen base's bias terms in
  every adapted layer (``all``), or the paper's subset of query and FFN-input biases (``query_ffn``).
  They are the base model's parameters in this process only: the artifact stores them under their
  module paths, as it stores trained LayerNorms, and the base model's files are never written.
* ``base_attention_dropout=False`` (ours too): only the dropout on attention probabilities goes, so
  attention takes the fused kernel while the hidden states keep their dropout, which is what
  regularises the adapters (the H200 seeds in docs/benchmarks.md: SST-2 lost 0.85 without it).
* ``base_hidden_dropout`` (ours): the rate of those hidden-state dropouts (the base's own when unset).

Adapters *wrap* existing modules (``base_layer``, like PEFT) instead of patching ``forward``:

============  ==============================  =========================  =======================
architecture  after attention (serial)        after FFN (serial)         FFN block (parallel)
============  ==============================  =========================  =======================
BERT/RoBERTa  ``attention.output.dense``      ``output.dense``           ``output`` (BertOutput)
DistilBERT    ``attention.out_lin``           ``ffn.lin2``               ``ffn``
GPT-2         ``attn.c_proj``                 ``mlp.c_proj``             ``mlp``
Llama-style   ``self_attn.o_proj``            ``mlp.down_proj``          ``mlp``
============  ==============================  =========================  =======================

In BERT the block's dropout runs after the serial adapter (the adapter sees ``dense(x)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from registry.errors import InvalidInput

#: name of the adapter submodule inside each wrapper; trainable parameters contain ``.adapter.``
ADAPTER_ATTR = "adapter"

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
}


class Bottleneck(nn.Module):
    """``up(act(down(x))) * scaling``; ``up`` starts at zero, so the output starts at zero."""

    def __init__(self, dim: int, size: int, non_linearity: str, scaling: float = 1.0) -> None:
        super().__init__()
        self.down = nn.Linear(dim, size)  # (B, T, C) -> (B, T, m)
        self.act = _ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(size, dim)  # (B, T, m) -> (B, T, C)
        self.scaling = float(scaling)
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x))) * self.scaling


class SerialAdapterLayer(nn.Module):
    """Wraps a sublayer's output projection: ``h = base_layer(x); h + adapter(h)``."""

    def __init__(self, base_layer: nn.Module, adapter: Bottleneck) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        h = self.base_layer(*args, **kwargs)
        return h + self.adapter(h)


class ParallelAdapterBlock(nn.Module):
    """Wraps a whole FFN block whose first argument is its input: ``FFN(x) + s * A(x)``."""

    def __init__(self, base_layer: nn.Module, adapter: Bottleneck) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.base_layer(x, *args, **kwargs) + self.adapter(x)


class ParallelBertOutput(nn.Module):
    """Wraps BERT's ``BertOutput`` (dense, dropout, LayerNorm(h + residual)); the adapter reads the
    FFN input (``input_tensor``, the residual) and is added before the residual + LayerNorm."""

    def __init__(self, base_layer: nn.Module, adapter: Bottleneck) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        b: Any = self.base_layer
        h = b.dropout(b.dense(hidden_states))
        h = h + self.adapter(input_tensor)
        return b.LayerNorm(h + input_tensor)


@dataclass(frozen=True)
class _LayerPoints:
    """Dotted paths, relative to one transformer block, of the insertion points."""

    attn_out: str
    ffn_out: str
    ffn_block: str
    layer_norms: tuple[str, ...]
    ffn_in: tuple[str, ...]  # the FFN's input projection(s), for Houlsby's ``ffn_lora_rank``
    # the dropout on attention probabilities (an ``nn.Dropout``, or the attention module whose float
    # ``attention_dropout`` goes to the kernel), for ``base_attention_dropout=False``
    attn_dropout: str
    bert_style: bool = False
    # the query projection, for ``train_biases="query_ffn"``; None where it is fused with keys and values
    query: str | None = None


_KINDS: dict[str, _LayerPoints] = {
    "bert": _LayerPoints(
        "attention.output.dense", "output.dense", "output", ("attention.output.LayerNorm", "output.LayerNorm"),
        ("intermediate.dense",), "attention.self.dropout", bert_style=True, query="attention.self.query",
    ),
    "distilbert": _LayerPoints(
        "attention.out_lin", "ffn.lin2", "ffn", ("sa_layer_norm", "output_layer_norm"), ("ffn.lin1",),
        "attention.dropout", query="attention.q_lin",
    ),
    "gpt2": _LayerPoints("attn.c_proj", "mlp.c_proj", "mlp", ("ln_1", "ln_2"), ("mlp.c_fc",), "attn.attn_dropout"),
    "llama": _LayerPoints(
        "self_attn.o_proj", "mlp.down_proj", "mlp", ("input_layernorm", "post_attention_layernorm"),
        ("mlp.gate_proj", "mlp.up_proj"), "self_attn", query="self_attn.q_proj",
    ),
}


def _has(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def _layer_kind(layer: nn.Module) -> str | None:
    for kind, points in _KINDS.items():
        paths = (points.attn_out, points.ffn_out, points.ffn_block, *points.layer_norms, *points.ffn_in)
        if all(_has(layer, p) for p in paths):
            return kind
    return None


def find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Return the dotted name and the ModuleList of the transformer blocks of ``model``."""
    config = getattr(model, "config", None)
    n_layers = getattr(config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if n_layers is not None and len(module) != n_layers:
            continue
        if name.split(".")[-1] in ("layer", "layers", "h", "block", "blocks"):
            return name, module
    model_type = getattr(config, "model_type", type(model).__name__)
    raise InvalidInput(
        f"bottleneck adapters do not support the architecture {model_type!r} (no transformer blocks found)",
        field="base_model",
    )


def bottleneck_size(hidden: int, cfg: dict[str, Any]) -> int:
    if cfg.get("bottleneck_size") is not None:
        return int(cfg["bottleneck_size"])
    return max(1, hidden // int(cfg.get("reduction_factor") or 16))


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, attr, new)


def _zero_dropout(module: nn.Module) -> bool:
    """Set ``module``'s dropout to 0 if it has one (an ``nn.Dropout``, or the float ``attention_dropout``
    that Llama-style attention passes to its kernel); return whether it had."""
    if isinstance(module, nn.modules.dropout._DropoutNd):
        module.p = 0.0
        return True
    if isinstance(getattr(module, "attention_dropout", None), float):
        module.attention_dropout = 0.0  # type: ignore[assignment]
        return True
    return False


def disable_dropout(model: nn.Module) -> int:
    """Set every dropout of ``model`` to p=0; return how many."""
    return sum(_zero_dropout(module) for module in model.modules())


def _attention_dropout(layer: nn.Module) -> nn.Module | None:
    """The module at ``layer``'s attention-probability dropout path, or None (unknown kind, no such path)."""
    kind = _layer_kind(layer)
    if kind is None or not _has(layer, _KINDS[kind].attn_dropout):
        return None
    return layer.get_submodule(_KINDS[kind].attn_dropout)


def disable_attention_dropout(layers: nn.ModuleList, model_type: str) -> int:
    """Set the dropout on attention probabilities of every block in ``layers`` to p=0, leaving the
    hidden-state dropouts as they are; return how many. Blocks of unknown kinds are left alone (the
    caller refuses them). Only this option needs the dropout's path, so a block that lacks it is
    refused here rather than in ``_layer_kind``, where it would refuse every bottleneck adapter."""
    count = 0
    for layer in layers:
        kind = _layer_kind(layer)
        if kind is None:
            continue
        module = _attention_dropout(layer)
        # refused, not skipped, where the path is missing or holds no dropout: the job would otherwise
        # train with the attention dropout the user asked to turn off
        if module is None or not _zero_dropout(module):
            raise InvalidInput(
                f"base_attention_dropout=false is not supported for the architecture {model_type!r} "
                f"(block {type(layer).__name__} has no attention dropout at {_KINDS[kind].attn_dropout!r})",
                field="method_config.base_attention_dropout",
            )
        count += 1
    return count


def set_hidden_dropout(model: nn.Module, layers: nn.ModuleList, rate: float) -> int:
    """Set every ``nn.Dropout`` of ``model`` except the blocks' attention-probability dropouts (the
    embeddings' and each block's attention-output and FFN-output dropouts, in BERT) to ``rate``; return
    how many. torch draws one number an element whatever the rate, so the random stream, and with it the
    batches and every other mask, stays as it was: a seed differs from the base's rate only in the rate."""
    skip = {id(m) for m in map(_attention_dropout, layers) if m is not None}
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and id(module) not in skip:
            module.p = float(rate)
            count += 1
    return count


def bias_parameters(layer: nn.Module, points: _LayerPoints, which: str, model_type: str) -> list[nn.Parameter]:
    """The bias terms of one (not yet wrapped) block that ``train_biases=which`` trains: ``all``: every
    parameter named ``bias`` in the block (projections and LayerNorms, as BitFit trains them);
    ``query_ffn``: the query and FFN-input projections' biases. Refused, naming the architecture, where
    the block has none of them (Llama-style blocks have no biases) or its query is fused with keys and
    values (GPT-2), rather than silently training less than the user asked for."""
    if which == "all":
        params = [p for name, p in layer.named_parameters() if name.rpartition(".")[2] == "bias"]
        if not params:
            raise InvalidInput(
                f"train_biases='all': the architecture {model_type!r} has no bias terms in its blocks",
                field="method_config.train_biases",
            )
        return params
    if points.query is None:
        raise InvalidInput(
            f"train_biases='query_ffn' is not supported for the architecture {model_type!r} (its query projection "
            "is fused with the keys and values); use 'all'",
            field="method_config.train_biases",
        )
    found: list[nn.Parameter] = []
    for path in (points.query, *points.ffn_in):
        bias = getattr(layer.get_submodule(path), "bias", None)
        if not isinstance(bias, nn.Parameter):
            raise InvalidInput(
                f"train_biases='query_ffn': {path!r} has no bias in the architecture {model_type!r}",
                field="method_config.train_biases",
            )
        found.append(bias)
    return found


def inject_bottleneck(model: nn.Module, method: str, cfg: dict[str, Any]) -> list[nn.Parameter]:
    """Insert the adapters of ``method`` into ``model`` in place; return the new trainable
    parameters (adapters, plus LayerNorms of adapted layers when ``train_layer_norms`` and their biases
    when ``train_biases``).

    The base model's own parameters are not touched here (the caller freezes them).
    """
    if method not in ("houlsby", "pfeiffer", "parallel", "scaled_parallel"):
        raise ValueError(method)
    _, layers = find_layers(model)
    config: Any = model.config
    hidden = int(config.hidden_size)
    size = bottleneck_size(hidden, cfg)
    skip = int(cfg.get("skip_layers", 0))
    if skip >= len(layers):
        raise InvalidInput(
            f"skip_layers={skip} leaves no layer with an adapter (the model has {len(layers)} layers)",
            field="method_config.skip_layers",
        )
    act = cfg["non_linearity"]
    scaling = float(cfg.get("scaling", 1.0))
    if not cfg.get("base_dropout", True):
        disable_dropout(model)  # before injecting: the adapters have no dropout of their own
    elif not cfg.get("base_attention_dropout", True):
        disable_attention_dropout(layers, str(config.model_type))
    if cfg.get("base_dropout", True) and cfg.get("base_hidden_dropout") is not None:
        set_hidden_dropout(model, layers, float(cfg["base_hidden_dropout"]))
    trainable: list[nn.Parameter] = []
    for index, layer in enumerate(layers):
        kind = _layer_kind(layer)
        if kind is None:
            raise InvalidInput(
                f"bottleneck adapters do not support the architecture {config.model_type!r} "
                f"(block {type(layer).__name__} has no known attention/FFN output)",
                field="base_model",
            )
        if index < skip:
            continue
        points = _KINDS[kind]
        which = str(cfg.get("train_biases", "none"))
        if which != "none":  # taken before wrapping, so the adapters' own biases are not among them
            trainable.extend(bias_parameters(layer, points, which, str(config.model_type)))
        new_modules: list[nn.Module] = []
        if method == "houlsby":
            for path in (points.attn_out, points.ffn_out):
                wrapped = SerialAdapterLayer(layer.get_submodule(path), Bottleneck(hidden, size, act))
                _replace(layer, path, wrapped)
                new_modules.append(wrapped.adapter)
        elif method == "pfeiffer":
            wrapped = SerialAdapterLayer(layer.get_submodule(points.ffn_out), Bottleneck(hidden, size, act))
            _replace(layer, points.ffn_out, wrapped)
            new_modules.append(wrapped.adapter)
        else:
            block = layer.get_submodule(points.ffn_block)
            adapter = Bottleneck(hidden, size, act, scaling)
            par: nn.Module = (
                ParallelBertOutput(block, adapter) if points.bert_style else ParallelAdapterBlock(block, adapter)
            )
            _replace(layer, points.ffn_block, par)
            new_modules.append(adapter)
        for module in new_modules:
            trainable.extend(module.parameters())
        if cfg.get("train_layer_norms"):
            for path in points.layer_norms:
                trainable.extend(layer.get_submodule(path).parameters())
    return trainable


def ffn_lora_targets(model: nn.Module, cfg: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Full module names (in ``model``, after :func:`inject_bottleneck`) of the FFN input and output
    projections of every adapted layer, for Houlsby's FFN LoRA. The output projection is the one
    the adapter wraps (``base_layer``): the adapter then sees ``dense(x) + LoRA(x)``, as it would
    see a fine-tuned ``dense(x)``."""
    name, layers = find_layers(model)
    skip = int(cfg.get("skip_layers", 0))
    ins: list[str] = []
    outs: list[str] = []
    for index, layer in enumerate(layers):
        if index < skip:
            continue
        points = _KINDS[str(_layer_kind(layer))]
        ins.extend(f"{name}.{index}.{p}" for p in points.ffn_in)
        outs.append(f"{name}.{index}.{points.ffn_out}.base_layer")
    return ins, outs


def check_bottleneck_supported(model: nn.Module) -> None:
    """Raise InvalidInput naming the architecture when ``inject_bottleneck`` cannot handle it."""
    _, layers = find_layers(model)
    if _layer_kind(layers[0]) is None:
        raise InvalidInput(
            f"bottleneck adapters do not support the architecture {model.config.model_type!r}",  # type: ignore[union-attr]
            field="base_model",
        )
