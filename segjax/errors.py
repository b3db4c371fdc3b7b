"""User-facing errors.

Each is raised for bad input a user can fix (a path, a config key, a checkpoint) and carries
one line that names the culprit. `segjax.main` prints that line and exits with status 2
instead of a traceback; anything else is a bug and keeps its traceback.
"""
import sys


def warn(message: str) -> None:
  """A `warning: ...` line on stderr: something the user should know that did not stop the
  run (e.g. a damaged checkpoint skipped on resume). Kept to one line, like errors."""
  print(f"warning: {message}", file=sys.stderr, flush=True)


class SegjaxError(Exception):
  """Base class of errors whose message alone tells the user what to fix."""


class ConfigError(SegjaxError):
  """An unknown, missing or inconsistent config value."""


class WorkdirError(SegjaxError):
  """A workdir that cannot be written, or that another trainer is using."""


class DataError(SegjaxError):
  """A missing dataset, an unreadable file, a mask that does not fit its image."""


class CheckpointError(SegjaxError):
  """A checkpoint that is missing or does not fit the model."""


class TrainingDivergedError(SegjaxError):
  """The loss became NaN or infinite."""


class DamagedCheckpointError(CheckpointError):
  """A checkpoint whose files cannot be read (truncated, missing, partially copied)."""
