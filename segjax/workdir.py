"""The files of a workdir besides checkpoints: the run lock, atomic writes, the eval history.

Every file here is written so that a crash at any moment leaves either the old or the new
version, never half of one (write a temporary file, then rename it over the target).
Paths go through etils.epath, so a gs:// workdir works too.
"""
import json
import os
import socket
import threading
import time
from typing import Any, Dict, List, Optional

from absl import logging
from etils import epath

from segjax.errors import WorkdirError

LOCK_FILE = "train.lock"
HISTORY_FILE = "eval_history.jsonl"


def _reason(e: OSError) -> str:
  return e.strerror or str(e) or type(e).__name__


def ensure_writable(workdir: str) -> epath.Path:
  """Creates `workdir` and proves a file can be written there, before the run changes
  anything; a read-only or full disk is one WorkdirError naming the path."""
  path = epath.Path(workdir)
  probe = path / f".write_test.{socket.gethostname()}.{os.getpid()}"
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text("segjax")
    probe.unlink()
  except OSError as e:
    raise WorkdirError(f"workdir {path} cannot be written ({_reason(e)}); choose another "
                      "--workdir or fix its permissions / free space") from e
  return path


def atomic_write_text(path, text: str) -> None:
  """Writes `text` to a temporary file beside `path`, then renames it over `path`."""
  path = epath.Path(path)
  tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
  try:
    tmp.write_text(text)
    tmp.replace(path)
  except OSError as e:
    raise WorkdirError(f"cannot write {path} ({_reason(e)})") from e


class EvalHistory:
  """eval_history.jsonl: one line {"step", "mIoU", ...} per evaluated step, in step order.

  After a resume from an older checkpoint (a crash after an evaluation, or a damaged latest
  checkpoint) the steps beyond the resumed one are dropped, and re-evaluating a step replaces
  its line, so the file always holds one line per step of the run that actually continues.
  """

  def __init__(self, workdir):
    self.path = epath.Path(workdir) / HISTORY_FILE

  def read(self) -> List[Dict[str, Any]]:
    if not self.path.exists():
      return []
    return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

  def _write(self, entries: List[Dict[str, Any]]) -> None:
    entries = sorted(entries, key=lambda e: e["step"])
    atomic_write_text(self.path, "".join(json.dumps(e) + "\n" for e in entries))

  def rollback(self, step: int) -> None:
    """Drops entries after `step` (the step training resumes from)."""
    entries = self.read()
    kept = [e for e in entries if e["step"] <= step]
    if len(kept) != len(entries):
      self._write(kept)

  def add(self, step: int, metrics: Dict[str, float]) -> None:
    entries = [e for e in self.read() if e["step"] != step]
    self._write(entries + [{"step": int(step), **metrics}])


class RunLock:
  """<workdir>/train.lock: at most one trainer per workdir.

  The file names its holder (host, pid) and its mtime is a heartbeat, refreshed by a background
  thread while the lock is held (also through long evaluations). A lock is stale, and is taken
  over, when its heartbeat is older than `stale_after` seconds or, sooner, when its holder is
  on this host and its pid is gone (a crash or kill -9). So a crashed run never leaves the
  workdir locked for good. On multi-host runs only process 0 takes the lock.
  """

  def __init__(self, workdir, stale_after: float = 600.0):
    self.path = epath.Path(workdir) / LOCK_FILE
    self.stale_after = stale_after
    self.holder = {"host": socket.gethostname(), "pid": os.getpid(),
                   "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    self._held = False
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  def _describe_other(self) -> Optional[str]:
    """A description of a live holder, or None when the lock is free or stale."""
    try:
      text = self.path.read_text()
      age = time.time() - self.path.stat().mtime
    except FileNotFoundError:
      return None
    try:
      other = json.loads(text)
    except ValueError:  # being written this instant by another starter
      other = {"host": "?", "pid": "?", "started": "?"}
    alive = age < self.stale_after  # a live holder refreshes it every 30 s
    if other.get("host") == self.holder["host"] and isinstance(other.get("pid"), int):
      alive = alive and _pid_alive(other["pid"]) and other["pid"] != os.getpid()
    if not alive:
      logging.info("taking over the stale lock %s of pid %s on %s", self.path,
                   other.get("pid"), other.get("host"))
      return None
    return (f"pid {other.get('pid')} on {other.get('host')}, started {other.get('started')}, "
            f"last heartbeat {age:.0f}s ago")

  def acquire(self) -> None:
    other = self._describe_other()
    if other is None:
      if self.path.exists():
        self.path.unlink(missing_ok=True)
      if _create_exclusive(self.path, json.dumps(self.holder)):
        self._held = True
        self._thread = threading.Thread(target=self._beat, name="segjax-lock-heartbeat",
                                        daemon=True)
        self._thread.start()
        return
      other = self._describe_other() or "another trainer that started at the same moment"
    raise WorkdirError(
        f"{self.path.parent} is in use by another trainer ({other}); wait for it to finish, "
        f"use another --workdir, or delete {self.path} if that run is gone")

  def _beat(self, every: float = 30.0) -> None:
    """Refreshes the lock's mtime every `every` seconds until released."""
    while not self._stop.wait(every):
      try:
        atomic_write_text(self.path, json.dumps(self.holder))
      except WorkdirError as e:  # a full disk shows up at the next checkpoint, named there
        logging.warning("could not refresh %s: %s", self.path, e)

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()  # so no heartbeat re-creates the file after it is removed
    if self._held:
      self._held = False
      try:
        self.path.unlink(missing_ok=True)
      except OSError as e:
        logging.warning("could not remove %s: %s", self.path, e)


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


def _create_exclusive(path: epath.Path, text: str) -> bool:
  """Creates `path` holding `text` unless it exists; False when another process won."""
  if "://" in str(path):  # object stores have no O_EXCL; the check above is the best we get
    if path.exists():
      return False
    path.write_text(text)
    return True
  try:
    fd = os.open(str(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, "w") as f:
    f.write(text)
  return True
