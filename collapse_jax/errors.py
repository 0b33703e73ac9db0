"""The errors a user can fix: each message is one sentence, and every launcher prints it
after ``error:`` and exits 2 (`cli.run_or_exit` catches the one base, `UserError`)."""


class UserError(ValueError):
  """A mistake in what the user asked for: a config, a path, a workdir, a checkpoint."""


class DataError(UserError):
  """A dataset that is missing, malformed or wrongly specified."""
