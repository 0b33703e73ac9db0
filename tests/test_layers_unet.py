"""Conv implementations agree; UNet and VAE nets keep their shapes at every supported size."""
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

from collapse_jax.nets.layers import (Conv, GroupNorm, conv_xla, resolve_conv_impl,
                                        upsample_nearest)
from collapse_jax.ops.matmul_conv import WINOGRAD_MIN_CHANNELS, conv_matmul
from collapse_jax.ops.winograd import (_transforms, conv3x3_winograd,
                                          upsample_conv3x3_winograd)
from collapse_jax.nets.unet import UNet
from collapse_jax.nets.conv_vae import Decoder, Encoder


def _assert_same_conv(conv, reference, kernel_size, size, in_channels, out_channels,
                      winograd=False):
  """conv(x, kernel) and reference(x, kernel) agree in value and both gradients."""
  kx, kw, ky = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(kx, (2, size, size + 1, in_channels))
  kernel = jax.random.normal(kw, (kernel_size, kernel_size, in_channels, out_channels))
  kernel = kernel / np.sqrt(kernel_size ** 2 * in_channels)
  out_shape = jax.eval_shape(reference, x, kernel).shape
  cotangent = jax.random.normal(ky, out_shape)

  @partial(jax.jit, static_argnums=0)
  def value_and_grads(conv):
    out, vjp = jax.vjp(conv, x, kernel)
    return (out, *vjp(cotangent))

  ours = value_and_grads(conv)
  for a, b in zip(ours, value_and_grads(reference)):
    # Winograd's transforms round differently: ~1e-5 of the largest entry.
    atol = 2e-5 * float(np.abs(b).max()) if winograd else 1e-5
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol)
  assert ours[0].shape == out_shape


@pytest.mark.parametrize("kernel_size", [1, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("channels", [5, WINOGRAD_MIN_CHANNELS])
def test_matmul_conv_matches_xla_values_and_gradients(kernel_size, stride, size, channels):
  winograd = (kernel_size, stride) == (3, 1) and channels >= WINOGRAD_MIN_CHANNELS
  _assert_same_conv(partial(conv_matmul, stride=stride), partial(conv_xla, stride=stride),
                    kernel_size, size, channels, channels + 1, winograd)


@pytest.mark.parametrize("size", [8, 7])
@pytest.mark.parametrize("channels", [(1, 8), (5, 6), (8, 1)])
def test_narrow_conv_matches_xla_for_each_tap_split(size, channels):
  # 1->8: all taps in patches; 5->6: row taps on the output side; 8->1: all on the output.
  _assert_same_conv(partial(conv_matmul, stride=1), partial(conv_xla, stride=1), 3, size,
                    *channels)


@pytest.mark.parametrize("size", [4, 6, 9])
@pytest.mark.parametrize("channels", [(1, 3), (6, 2)])
def test_winograd_matches_xla_at_any_size_and_width(size, channels):
  # Sizes that are, and are not, multiples of the 4x4 output tile; any channel counts.
  _assert_same_conv(conv3x3_winograd, partial(conv_xla, stride=1), 3, size, *channels,
                    winograd=True)


def _upsample_then_conv_xla(x, kernel):
  return conv_xla(upsample_nearest(x), kernel, 1)


def _upsampling_conv_layer(impl):
  """conv(x, kernel) of the Conv layer after an exact x2 upsampling, in `impl`."""
  def conv(x, kernel):
    layer = Conv(kernel.shape[-1], kernel_size=kernel.shape[0], use_bias=False, impl=impl)
    return layer.apply({"params": {"kernel": kernel}}, x,
                       upsample_to=(2 * x.shape[1], 2 * x.shape[2]))
  return conv


@pytest.mark.parametrize("kernel_size", [1, 3])
@pytest.mark.parametrize("channels", [5, WINOGRAD_MIN_CHANNELS])
def test_conv_layer_with_upsampling_matches_xla(kernel_size, channels):
  winograd = kernel_size == 3 and channels >= WINOGRAD_MIN_CHANNELS  # the fused op
  _assert_same_conv(_upsampling_conv_layer("matmul"), _upsample_then_conv_xla,
                    kernel_size, 7, channels, channels + 1, winograd)


@pytest.mark.parametrize("size", [1, 3, 4, 7, 14])
def test_fused_upsample_conv_matches_xla_at_any_size(size):
  # Sizes whose (size + 1) outputs per parity pick each of the F(3|4|5, 2) tiles, whole or
  # cropped; odd channel counts.
  _assert_same_conv(upsample_conv3x3_winograd, _upsample_then_conv_xla, 3, size, 3, 5,
                    winograd=True)


@pytest.mark.parametrize("m, r", [(4, 3), (3, 2), (4, 2), (5, 2)])
def test_winograd_transforms_compute_a_correlation(m, r):
  tf = _transforms(m, r)
  d, g = np.random.default_rng(0).standard_normal((2, m + r - 1))
  winograd = tf.at @ ((tf.g @ g[:r]) * (tf.bt @ d))
  np.testing.assert_allclose(winograd, np.correlate(d, g[:r], "valid"), rtol=1e-5, atol=1e-5)


def test_conv_layer_upsamples_exactly_or_with_a_crop():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, WINOGRAD_MIN_CHANNELS))
  for size in [(8, 8), (7, 8)]:  # fused x2 in the matmul path; a crop is never fused
    outs = [Conv(3, impl=impl).init_with_output(jax.random.PRNGKey(1), x, upsample_to=size)[0]
            for impl in ("matmul", "xla")]
    assert outs[0].shape == (2, *size, 3)
    np.testing.assert_allclose(*outs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("impl", ["matmul", "xla"])
def test_conv_is_parameter_compatible_with_nn_conv(impl):
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
  ours, ref = Conv(4, strides=2, impl=impl), nn.Conv(4, (3, 3), strides=2, padding="SAME")
  params = ours.init(jax.random.PRNGKey(2), x)
  ref_params = ref.init(jax.random.PRNGKey(2), x)
  jax.tree.map(np.testing.assert_array_equal, params, ref_params)
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)


def test_group_norm_matches_flax_values_and_gradients():
  x = 3 * jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7, 12)) + 2
  ours, ref = GroupNorm(num_groups=3), nn.GroupNorm(num_groups=3, epsilon=1e-6)
  params = ours.init(jax.random.PRNGKey(1), x)
  jax.tree.map(np.testing.assert_array_equal, params, ref.init(jax.random.PRNGKey(1), x))
  params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), params)

  def value_and_grads(module):  # compiled whole, as training runs it
    def both(params, x):
      out, vjp = jax.vjp(lambda p, x: module.apply(p, x), params, x)
      return out, vjp(jnp.sin(out))
    return jax.jit(both)(params, x)

  for a, b in zip(jax.tree.leaves(value_and_grads(ours)), jax.tree.leaves(value_and_grads(ref))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="do not divide"):
    GroupNorm(num_groups=5).init(jax.random.PRNGKey(1), x)


def test_auto_impl_and_upsample():
  assert resolve_conv_impl("xla") == "xla"
  assert resolve_conv_impl("matmul") == "matmul"
  # Training runs in a while loop, where XLA:CPU's conv gradients are slow (layers.py).
  assert resolve_conv_impl("auto") == ("matmul" if jax.default_backend() == "cpu" else "xla")
  with pytest.raises(ValueError):
    resolve_conv_impl("im2col")
  x = jnp.arange(8.0).reshape(1, 2, 2, 2)
  up = upsample_nearest(x, (3, 4))
  assert up.shape == (1, 3, 4, 2)
  np.testing.assert_array_equal(up[0, :2, :2, 1], np.full((2, 2), 1.0))


# Tests check values, not speed: skipping LLVM optimisation halves XLA:CPU compile time.
FAST_COMPILE = {"xla_backend_optimization_level": 0}

UNET_CONFIGS = {
    8: ((1, 2), (4,)),         # sklearn digits
    28: ((1, 2, 2, 2), (7,)),  # MNIST: 28 -> 14 -> 7 -> 4 and back, cropping on the way up
    32: ((1, 2, 2), (16,)),
    64: ((1, 2, 2), (16,)),
}


def tiny_unet(size: int) -> UNet:
  channel_mult, attn = UNET_CONFIGS[size]
  return UNet(base_channels=8, channel_mult=channel_mult, num_res_blocks=1,
              attn_resolutions=attn, dropout=0.1)


@pytest.mark.parametrize("size", sorted(UNET_CONFIGS))
def test_unet_shapes(size):
  # Shapes and dtypes by tracing only (compiling four UNets would dominate the test time).
  model = tiny_unet(size)
  x, t = jnp.ones((2, size, size, 3)), jnp.array([0.0, 500.0])
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, t)
  out = jax.eval_shape(
      lambda p: model.apply(p, x, t, train=True, rngs={"dropout": jax.random.PRNGKey(1)}), params)
  assert out.shape == x.shape and out.dtype == jnp.float32
  # Attention after each block at the one requested level (1 encoder + 2 decoder) + middle.
  assert sum(k.startswith("AttnBlock") for k in params["params"]) == 4


def test_unet_runs_and_depends_on_noise_level():
  model = tiny_unet(8)
  # One image at two noise levels: the outputs may differ only through t.
  x = jnp.broadcast_to(jax.random.normal(jax.random.PRNGKey(0), (1, 8, 8, 3)), (2, 8, 8, 3))
  t = jnp.array([0.0, 300.0])

  def outputs(key):
    # Zero-initialised output layers would make every output 0: perturb all params.
    flat, unravel = ravel_pytree(model.init(key, x, t))
    return model.apply(unravel(flat + 0.1 * jax.random.normal(key, flat.shape)), x, t)

  out = jax.jit(outputs, compiler_options=FAST_COMPILE)(jax.random.PRNGKey(1))
  assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
  assert float(jnp.abs(out[0] - out[1]).max()) > 1e-3


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (32, 32, 3)])
def test_vae_nets_shapes(shape):
  encoder, decoder = Encoder(latent_dim=6), Decoder(latent_dim=6, out_shape=shape)
  x = jnp.ones((3, *shape))

  def run(key):
    mean, logvar = encoder.apply(encoder.init(key, x), x)
    return mean, logvar, decoder.apply(decoder.init(key, mean), mean)

  # Run the smallest for real, trace the others.
  mean, logvar, out = (jax.jit(run, compiler_options=FAST_COMPILE) if shape[0] == 8 else partial(jax.eval_shape, run))(
      jax.random.PRNGKey(0))
  assert mean.shape == logvar.shape == (3, 6)
  assert out.shape == (3, *shape) and out.dtype == jnp.float32
