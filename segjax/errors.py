"""User-facing errors.

Each is raised for bad input a user can fix (a path, a config key, a checkpoint) and carries
one line that names the culprit. `segjax.main` prints that line and exits with status 2
instead of a traceback; anything else is a bug and keeps its traceback.
"""


class SegjaxError(Exception):
  """Base class of errors whose message alone tells the user what to fix."""


class ConfigError(SegjaxError):
  """An unknown, missing or inconsistent config value."""


class DataError(SegjaxError):
  """A missing dataset, an unreadable file, a mask that does not fit its image."""


class CheckpointError(SegjaxError):
  """A checkpoint that is missing or does not fit the model."""


class TrainingDivergedError(SegjaxError):
  """The loss became NaN or infinite."""
