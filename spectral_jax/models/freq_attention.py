"""Frequency attention: the stage-2 layer through which the ``F`` frequencies
of an example see each other.

`MotionUNet` puts one after every unit, under the attribute ``freq_attn``,
built by `make` from ``config.model.freq_attention``, a name in `VARIANTS`
("none": no layer, stage 1). A variant is a module
``Variant(channels, num_heads, num_freqs, *, dtype, attention_impl, rngs)``
(``attention_impl``: `layers.ATTENTION_IMPLEMENTATIONS`) called as
``x [B * F, h, w, C], freq_index [B, F] int → [B * F, h, w, C]``: residual,
and exactly the identity at initialisation, so that stage 2 loaded from
stage 1 (``init_from``) starts as stage 1. To try one, write its class here
and add it to `VARIANTS`: ``config.trainable = "freq_attention"`` trains the
parameters of whichever variant is built (`param_paths`) and nothing else.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from spectral_jax.models import layers


class FrequencyAttention(nnx.Module):
  """Self-attention across frequencies at each spatial position, residual.

  Tokens are the ``F`` frequencies of one example at one ``(y, x)``; they are
  LayerNorm-ed, get a learned embedding of their frequency index (so any
  subset or order of bins is handled), and attend to each other. The output
  projection is zero-initialised: at init the layer is exactly the identity.
  """

  def __init__(self, channels: int, num_heads: int, num_freqs: int, *, dtype=jnp.float32,
               attention_impl: str = "xla", rngs: nnx.Rngs):
    self.norm = nnx.LayerNorm(channels, epsilon=1e-6, dtype=dtype, param_dtype=jnp.float32,
                              rngs=rngs)
    self.pos_embed = nnx.Embed(num_freqs, channels, dtype=dtype, param_dtype=jnp.float32,
                               rngs=rngs)
    self.attn = layers.SelfAttention(channels, num_heads, zero_init=True, dtype=dtype,
                                     implementation=attention_impl, rngs=rngs)

  def __call__(self, x, freq_index):
    """``x [B * F, h, w, C]``, ``freq_index [B, F]`` int → ``[B * F, h, w, C]``."""
    b, f = freq_index.shape
    _, h, w, c = x.shape
    tokens = x.reshape(b, f, h * w, c).transpose(0, 2, 1, 3)  # [B, h*w, F, C]
    tokens = self.norm(tokens) + self.pos_embed(freq_index)[:, None]
    out = self.attn(tokens.reshape(b * h * w, f, c)).reshape(b, h * w, f, c)
    return x + out.transpose(0, 2, 1, 3).reshape(b * f, h, w, c)


# ``config.model.freq_attention`` → the module class; None: no layer.
VARIANTS = {"none": None, "attention": FrequencyAttention}


def make(name: str, channels: int, num_heads: int, num_freqs: int, *, dtype,
         attention_impl: str = "xla", rngs: nnx.Rngs) -> nnx.Module | None:
  """The `VARIANTS` layer called ``name`` for ``channels``-wide maps; None for "none"."""
  if name not in VARIANTS:
    raise ValueError(f"unknown frequency attention {name!r}; one of {', '.join(VARIANTS)}")
  variant = VARIANTS[name]
  return None if variant is None else variant(channels, num_heads, num_freqs, dtype=dtype,
                                              attention_impl=attention_impl, rngs=rngs)


def param_paths(model: nnx.Module) -> set[tuple]:
  """Paths (as ``nnx.to_flat_state(nnx.state(model, nnx.Param))`` gives
  them) of the parameters held by ``model``'s frequency-attention modules:
  those of any `VARIANTS` class, so a new variant's train in stage 2 with no
  pattern to update."""
  classes = tuple(variant for variant in VARIANTS.values() if variant is not None)
  return {prefix + path
          for prefix, node in nnx.iter_graph(model) if isinstance(node, classes)
          for path, _ in nnx.to_flat_state(nnx.state(node, nnx.Param))}
