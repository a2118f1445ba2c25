"""Which encoder states the KT heads read, captured during CTC's own forward pass (fairseq glue).

By default the heads read what the CTC projection reads: the input of ``w2v_encoder.proj`` (after the last layer
and, for pre-LN models, the encoder's final LayerNorm), as in Deng et al. (arXiv:2203.03582). ``layer = k >= 1``
reads the output of the k-th transformer layer instead, so that KT shapes a lower layer and leaves the top layers
to CTC (the intermediate-layer choice the paper's ablations leave open). With LayerDrop, a dropped layer k gives the
output of the last layer below it that ran.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP / fairseq wrappers (``.module`` chains)."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a ``wav2vec_ctc`` / ``hubert_ctc`` model's encoder.

    Raises:
        TypeError: the model has no ``w2v_encoder.w2v_model.encoder.layers``.
    """
    inner = unwrap(model)
    layers: Any = inner
    for name in ("w2v_encoder", "w2v_model", "encoder", "layers"):
        layers = getattr(layers, name, None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(inner).__name__} has no w2v_encoder.w2v_model.encoder.layers to read a layer from")
    return layers


@contextlib.contextmanager
def capture_encoder_states(model: nn.Module, layer: int = 0) -> Iterator[dict[str, Any]]:
    """Capture, during one forward of a CTC fine-tuning model, the states the KT heads read and the padding mask.

    Args:
        model: a ``wav2vec_ctc`` (or ``hubert_ctc``) model, possibly wrapped.
        layer: 0 = the CTC projection's input; k >= 1 = the output of transformer layer k (1-based).

    Yields a dict that, after the forward, holds ``states`` (T×B×C) and ``padding_mask`` (B×T, True = pad, or
    None when nothing in the batch is padded).

    Raises:
        TypeError: if the model has no ``w2v_encoder.proj`` (not a CTC fine-tuning model of this family).
        ValueError: ``layer`` outside 0..number of encoder layers (named as ``criterion.kt_encoder_layer``).
    """
    inner = unwrap(model)
    encoder = getattr(inner, "w2v_encoder", None)
    proj = getattr(encoder, "proj", None)
    if proj is None:
        raise TypeError(
            f"ctc_kt needs a CTC fine-tuning model with w2v_encoder.proj (wav2vec_ctc, hubert_ctc); got "
            f"{type(inner).__name__}. Set model._name=wav2vec_ctc or hubert_ctc."
        )
    captured: dict[str, Any] = {}

    def on_proj(_module: nn.Module, args: tuple) -> None:
        if layer == 0:
            captured["states"] = args[0]
        else:  # layer outputs can carry frames padded to a multiple (fairseq's required_seq_len_multiple)
            # (all layers up to k dropped by LayerDrop: the projection's input, the only states there are)
            captured["states"] = captured.pop("layer_states", args[0])[: args[0].shape[0]]

    def on_layer(_module: nn.Module, _args: tuple, output: Any) -> None:
        captured["layer_states"] = output[0] if isinstance(output, tuple) else output

    def on_encoder(_module: nn.Module, _args: tuple, output: Any) -> None:
        captured["padding_mask"] = output.get("padding_mask") if isinstance(output, dict) else None

    handles = [proj.register_forward_pre_hook(on_proj), encoder.register_forward_hook(on_encoder)]
    if layer != 0:
        layers = encoder_layers(inner)
        if not 1 <= layer <= len(layers):
            raise ValueError(
                f"criterion.kt_encoder_layer={layer}: the encoder has {len(layers)} layers "
                f"(0 = the CTC projection's input, 1..{len(layers)} = a layer's output)"
            )
        handles += [layers[k].register_forward_hook(on_layer) for k in range(layer)]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()
