"""EDM on FFHQ 64x64 (Bertrand et al.'s FFHQ setting), policy accumulate, fine-tuning each
generation: the headline run.

The same as configs/ffhq.py:accumulate (its default), kept under this name because it is
the command the project's users run. Variants: smoke (resolution 8, a tiny UNet, 2 generations; the images in
$COLLAPSE_JAX_FFHQ if it is set, else scikit-learn's 8x8 digits)."""
from collapse_jax import presets


def get_config(arg=None):
  return presets.same_as(__file__, "ffhq.py:accumulate", arg)
