"""Samples from generation g's model of a finished (or running) run.

    python launch/sample.py --workdir=runs/digits/replace --generation=7 --num=64 \
        --out=replace_g7.png [--seed_index=0] [--key=0]

Writes ``--out``: a PNG grid for image rows, a scatter PNG for 2-D points, the stories of
a language model as text (``.txt``, decoded by the run's tokenizer), conformers as an SDF
(``.sdf``, each its training molecule's graph), or (any data, ``.npz``) the rows
themselves.
"""
import pathlib

import jax
import numpy as np
from absl import flags

from collapse_jax import cli, experiment, host_memory, inference, validate
from collapse_jax.data import molecule_chemistry
from collapse_jax.evals import text
from collapse_jax.report import grids

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory.")
_GENERATION = flags.DEFINE_integer("generation", None, "Which generation's model.")
_NUM = flags.DEFINE_integer("num", 64, "Number of samples.")
_OUT = flags.DEFINE_string("out", None,
                           "Output file: .png (images, 2-D points), .txt (stories), .sdf "
                           "(conformers) or .npz.")
_SEED_INDEX = flags.DEFINE_integer("seed_index", 0, "Which replicate of the run.")
_KEY = flags.DEFINE_integer("key", 0, "Sampling key (folded into the replicate's root).")
flags.mark_flags_as_required(["workdir", "generation", "out"])


def write(gen: inference.Generation, rows: dict, out: pathlib.Path) -> None:
  field = gen.loop.source.row_spec.data
  data = np.asarray(rows[field])
  tokenizer = getattr(gen.loop.source, "tokenizer", None)  # token rows: stories
  dataset = getattr(gen.loop.source, "dataset", None)  # conformers: their molecules
  out.parent.mkdir(parents=True, exist_ok=True)
  if out.suffix == ".npz":
    np.savez(out, **{k: np.asarray(v) for k, v in rows.items()})
  elif out.suffix == ".png" and data.ndim == 4:
    grids.save_grid(data, out)
  elif out.suffix == ".png" and data.ndim == 2 and data.shape[1] == 2:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(data[:, 0], data[:, 1], s=4)
    ax.set_aspect("equal")
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
  elif out.suffix == ".txt" and tokenizer is not None:
    stories = [tokenizer.decode(text.story_ids(row)[0]) for row in data]
    out.write_text("".join(f"{story}\n\n" for story in stories))
  elif out.suffix == ".sdf" and dataset is not None:
    molecule_chemistry.write_sdf(dataset.splits["train"], np.asarray(rows["mol_id"]), data, out)
  else:
    also = " or .txt" if tokenizer is not None else " or .sdf" if dataset is not None else ""
    raise validate.ConfigError(
        f"--out={out}: rows of shape {data.shape[1:]} can be written as .npz{also} only.")


def main(argv):
  del argv  # cli.run refuses positional arguments
  experiment.configure_logging()
  gen = inference.load_generation(_WORKDIR.value, _GENERATION.value)
  if not 0 <= _SEED_INDEX.value < gen.config.num_seeds:
    raise validate.ConfigError(
        f"--seed_index must be in [0, {gen.config.num_seeds}), got {_SEED_INDEX.value}.")
  if _NUM.value < 1:
    raise validate.ConfigError(f"--num must be positive, got {_NUM.value}.")
  rows = {k: jax.ShapeDtypeStruct((_NUM.value, *shape), dtype)
          for k, (shape, dtype) in gen.loop.source.row_spec.fields.items()}
  problem = host_memory.too_large(host_memory.nbytes(rows), f"--num={_NUM.value}",
                                  jax.devices()[:1], "ask for fewer samples")
  if problem:
    raise validate.ConfigError(problem)
  rows = inference.sample_generation(gen, _NUM.value, _SEED_INDEX.value, _KEY.value)
  write(gen, rows, pathlib.Path(_OUT.value))
  print(f"Wrote {_NUM.value} samples of generation {_GENERATION.value} to {_OUT.value}.")


if __name__ == "__main__":
  cli.run(main)
