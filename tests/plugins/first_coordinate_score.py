"""A curation score from outside the package (``--config.curation.score=
plugins.first_coordinate_score``): a linear reward, the first coordinate of the row, as in
docs/curation.md's closed forms."""


class FirstCoordinate:

  def __call__(self, state, task, rows, key, pool):
    del state, task, key, pool
    return rows["x"][:, 0]


def build(config, loop):
  del config, loop
  return FirstCoordinate()


def check(config, loop):
  if "x" not in loop.source.row_spec.fields:
    return "The first_coordinate score needs rows with a vector field 'x'."
  return None
