"""The errors the launchers map to exit codes (`cli.run_or_exit`): a `UserError` is a
mistake the user can fix, its message one sentence, printed after ``error:`` with exit 2; a
`NonFiniteError` is a run that diverged, exit 1."""


class UserError(ValueError):
  """A mistake in what the user asked for: a config, a path, a workdir, a checkpoint."""


class DataError(UserError):
  """A dataset that is missing, malformed or wrongly specified."""


class NonFiniteError(RuntimeError):
  """A generation produced non-finite metrics; earlier generations are checkpointed."""
