"""Converts pytorch-fid's Inception weights to the .npz that collapse_jax reads.

  python -m tools.convert_inception_weights pt_inception-2015-12-05-6726825d.pth \
      inception_fid.npz   # from the repository root
  export COLLAPSE_JAX_INCEPTION_WEIGHTS=$PWD/inception_fid.npz

Needs torch (only to unpickle the state dict). The .pth is pytorch-fid's FID_WEIGHTS_URL,
fetched wherever downloads are possible.
"""
import argparse
from collections.abc import Sequence

import numpy as np
import torch

from collapse_jax.metrics import inception


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A torch state dict file as numpy arrays, keyed by the torch names."""
  state_dict = torch.load(path, map_location="cpu", weights_only=True)
  return {name: tensor.detach().numpy() for name, tensor in state_dict.items()}


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("pth", help="pytorch-fid state dict (.pth)")
  parser.add_argument("npz", help="output weights for collapse_jax.metrics.inception")
  args = parser.parse_args(argv)
  inception.save_params(args.npz, inception.convert_state_dict(read_state_dict(args.pth)))
  print(f"wrote {args.npz}")


if __name__ == "__main__":
  main()
