"""Faults: kills at any moment, damaged checkpoints, signals, full disks, concurrent trainers.

Each fault is injected for real where it can be (SIGKILL, SIGINT, truncated files, a file
size limit that makes writes fail like a full disk, a second trainer process) and the test
checks what the user sees (one `error:`/`warning:` line, no traceback) and that nothing
already written was lost. Multi-host faults are in test_multihost.py.
"""
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from segjax import checkpoint as ckpt_lib
from segjax import evaluate, models, parallel, train
from segjax import workdir as workdir_lib
from segjax.errors import CheckpointError, ConfigError, DamagedCheckpointError, WorkdirError
from segjax.inference import Segmenter
from tests.conftest import REPO, load_config, wait_for

RUNNER = os.path.join(REPO, "tests", "fault_runner.py")


def config_and_args(**train):
  """configs/test.py with train.* overrides, as a ConfigDict and as command-line flags."""
  config = load_config("test")
  config.train.update(train)
  args = ["--config=configs/test.py"] + [f"--config.train.{k}={v}" for k, v in train.items()]
  return config, args


def command(workdir, args, moment="none"):
  return [sys.executable, RUNNER, moment, "--", f"--workdir={workdir}", *args]


def launch(workdir, args):
  """Starts segjax.main in the background with its stderr in <workdir>.stderr, to watch."""
  return subprocess.Popen(command(workdir, args), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=open(f"{workdir}.stderr", "w"), text=True)


def run(workdir, args, moment="none", limit_file_size=None, timeout=300):
  """Runs segjax.main (through fault_runner) to its end; returns (exit status, stderr)."""
  def limit():  # from here on, writing a file beyond this size fails (EFBIG), like ENOSPC
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

  proc = subprocess.run(command(workdir, args, moment), cwd=REPO, capture_output=True,
                        text=True, timeout=timeout,
                        preexec_fn=limit if limit_file_size is not None else None)
  return proc.returncode, proc.stderr


def user_lines(stderr, kind):
  return [line for line in stderr.splitlines() if line.startswith(f"{kind}:")]


def restore(workdir, config, which="latest"):
  model = models.build_model(config)
  target = evaluate.abstract_variables(model, config, parallel.make_mesh())
  checkpointer = ckpt_lib.Checkpointer(str(workdir), read_only=True)
  try:
    return checkpointer.restore_model(which, target)
  finally:
    checkpointer.close()


def assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def history(workdir):
  return workdir_lib.EvalHistory(str(workdir)).read()


def damage(step_dir):
  """A partial copy: every array file of the model item truncated to 10 bytes."""
  data = os.path.join(step_dir, "model", "ocdbt.process_0", "d")
  for name in os.listdir(data):
    with open(os.path.join(data, name), "r+b") as f:
      f.truncate(10)


# ------------------------------------------------------------------------- kill -9 anywhere
def test_sigkill_at_five_moments_then_resume_equals_an_uninterrupted_run(tmp_path):
  """One workdir, killed with SIGKILL at five different moments in turn (each resume
  continues from whatever the previous kill left), then run to the end: the final parameters
  and the evaluation history equal an uninterrupted run's bit for bit."""
  train_kw = dict(num_steps=12, checkpoint_every=2, eval_every=3, log_every=1)
  config, args = config_and_args(**train_kw)
  reference = tmp_path / "reference"
  train.train_and_evaluate(config, str(reference))

  workdir = tmp_path / "killed"
  for moment in ("batch", "async_save", "eval", "best_save", "history"):
    code, stderr = run(workdir, args, moment)
    assert code == -signal.SIGKILL, (moment, stderr[-3000:])
  code, stderr = run(workdir, args)
  assert code == 0, stderr[-3000:]
  assert not user_lines(stderr, "error") and "Traceback" not in stderr

  step, params = restore(workdir, config)
  ref_step, ref_params = restore(reference, config)
  assert step == ref_step == 12
  assert_same_params(params, ref_params)
  assert history(workdir) == history(reference)  # one line per step, same numbers
  assert [h["step"] for h in history(workdir)] == [3, 6, 9, 12]
  leftovers = [n for n in os.listdir(workdir / "checkpoints") if not n.isdigit()]
  assert not leftovers, leftovers  # unfinished saves were cleaned up on resume


# ------------------------------------------------------------------------- damaged checkpoints
@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
  """A finished 6-step run with checkpoints at 2, 4, 6 and evaluations at 3, 6."""
  config, args = config_and_args(num_steps=6, checkpoint_every=2, eval_every=3,
                                 async_checkpoint=False)
  workdir = tmp_path_factory.mktemp("six") / "run"
  train.train_and_evaluate(config, str(workdir))
  return config, args, workdir


def copy_of(src, dst):
  shutil.copytree(src, dst)
  return dst


def test_damaged_latest_checkpoint_resume_falls_back_and_evaluation_refuses(six_steps,
                                                                          tmp_path):
  config, args, pristine = six_steps
  _, expected = restore(pristine, config)
  workdir = copy_of(pristine, tmp_path / "run")
  damage(workdir / "checkpoints" / "6")

  # Evaluation, prediction and init_from never fall back: they name the damaged directory.
  config = config.copy_and_resolve_references()
  config.eval.checkpoint = "6"
  with pytest.raises(DamagedCheckpointError, match=r"checkpoints/6: checkpoint is unreadable "
                                                   r"or incomplete \(.*\); other saved steps: "
                                                   r"\[2, 4\]"):
    evaluate.evaluate_workdir(config, str(workdir))
  with pytest.raises(DamagedCheckpointError, match="checkpoints/6: checkpoint is unreadable"):
    Segmenter.from_workdir(str(workdir))
  code, stderr = run(workdir, args + ["--mode=evaluate", "--config.eval.checkpoint=6"])
  assert code == 2, stderr[-3000:]
  (line,) = user_lines(stderr, "error")  # the report: 51 tracebacks, exit status 1
  assert line.startswith(f"error: {workdir}/checkpoints/6: checkpoint is unreadable or "
                         "incomplete (")
  for noise in ("Traceback", "Exception ignored", "never awaited", "warning:"):
    assert noise not in stderr, noise
  fresh = config.copy_and_resolve_references()
  fresh.init_from = str(workdir)
  with pytest.raises(DamagedCheckpointError, match="checkpoints/6: checkpoint is unreadable"):
    train.train_and_evaluate(fresh, str(tmp_path / "fresh"))

  # Training resumes from step 4 with one warning, keeps the damaged step aside, and
  # retrains step 5..6 to exactly the parameters the damaged checkpoint held.
  code, stderr = run(workdir, args)
  assert code == 0, stderr[-3000:]
  (warning,) = user_lines(stderr, "warning")
  assert warning.startswith("warning: resuming from step 4: skipped 1 damaged checkpoint(s), "
                            f"moved to {workdir}/checkpoints_damaged/6 (not deleted)")
  assert not user_lines(stderr, "error") and "Traceback" not in stderr
  assert sorted(os.listdir(workdir / "checkpoints_damaged" / "6")) == sorted(
      os.listdir(pristine / "checkpoints" / "6"))
  step, params = restore(workdir, config, "latest")
  assert step == 6
  assert_same_params(params, expected)
  assert [h["step"] for h in history(workdir)] == [3, 6]
  assert history(workdir) == history(pristine)


def test_only_checkpoint_damaged_refuses_and_changes_nothing(six_steps, tmp_path):
  config, _, pristine = six_steps
  workdir = copy_of(pristine, tmp_path / "run")
  for step in ("2", "4"):
    shutil.rmtree(workdir / "checkpoints" / step)
  damage(workdir / "checkpoints" / "6")
  before = sorted(p for p in os.listdir(workdir))
  config_json = (workdir / "config.json").read_text()
  with pytest.raises(DamagedCheckpointError, match=r"checkpoints: all 1 checkpoint\(s\) are "
                                                   r"unreadable .* nothing was changed"):
    train.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(workdir)) == before
  assert os.listdir(workdir / "checkpoints") == ["6"]
  assert (workdir / "config.json").read_text() == config_json


def _truncate_model_files(d):
  damage(d)


def _delete_model_item(d):
  shutil.rmtree(os.path.join(d, "model"))


def _garbage_model_metadata(d):
  with open(os.path.join(d, "model", "_METADATA"), "w") as f:
    f.write("{not json")


def _delete_manifest(d):
  os.remove(os.path.join(d, "model", "manifest.ocdbt"))


def _empty_array_files(d):
  data = os.path.join(d, "model", "ocdbt.process_0", "d")
  for name in os.listdir(data):
    open(os.path.join(data, name), "w").close()


@pytest.mark.parametrize("how", [_truncate_model_files, _delete_model_item,
                                 _garbage_model_metadata, _delete_manifest, _empty_array_files])
def test_every_kind_of_damage_is_one_named_error(six_steps, tmp_path, how):
  config, _, pristine = six_steps
  workdir = copy_of(pristine, tmp_path / "run")
  how(str(workdir / "checkpoints" / "4"))
  with pytest.raises(DamagedCheckpointError, match=r"checkpoints/4: checkpoint is unreadable"):
    restore(workdir, config, "4")
  step, _ = restore(workdir, config, "6")  # the others are unaffected
  assert step == 6


# ------------------------------------------------------------------------- resume validation
def test_resume_with_another_config_refuses_before_writing(six_steps, tmp_path):
  config, _, pristine = six_steps
  workdir = copy_of(pristine, tmp_path / "run")
  snapshot = {p: (workdir / p).read_bytes() for p in ("config.json", "eval_history.jsonl",
                                                      "eval_results.json")}
  changed = config.copy_and_resolve_references()
  changed.optim.lr = 2e-3
  changed.seed = 1
  changed.train.num_steps = 8
  with pytest.raises(ConfigError, match=r"differs from the one saved in .*checkpoints/6 in "
                                        r"fields that change training: optim.lr \(0.001 -> "
                                        r"0.002\), seed \(0 -> 1\); use a new --workdir, or "
                                        r"--config.train.allow_config_changes=True"):
    train.train_and_evaluate(changed, str(workdir))
  for name, content in snapshot.items():
    assert (workdir / name).read_bytes() == content, name
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4", "6"]

  # Told to accept the changes, a different optimizer structure is still caught by name.
  changed.optim.lr, changed.seed = config.optim.lr, config.seed
  changed.optim.lr_mults = (("^decode_head/", 10.0), ("^backbone/block0", 2.0))
  changed.train.allow_config_changes = True
  with pytest.raises(CheckpointError, match=r"checkpoints/6: checkpoint .* optimizer state "
                                            r"entr.*'opt_state/inner_states/lr"):
    train.train_and_evaluate(changed, str(workdir))
  assert (workdir / "config.json").read_bytes() == snapshot["config.json"]


def test_raising_num_steps_warns_about_the_lr_jump(six_steps, capsys):
  config, _, workdir = six_steps
  saved = ckpt_lib.Checkpointer(str(workdir), read_only=True).saved_config("latest").to_dict()
  longer = config.copy_and_resolve_references()
  longer.train.num_steps = 12  # continue the finished 6-step run: poly(1.0) from 0 back up
  train.check_resume_config(saved, longer, 6, "ckpt")
  (warning,) = user_lines(capsys.readouterr().err, "warning")
  assert warning == ("warning: train.num_steps changed 6 -> 12: the poly schedule is stretched "
                     "to the new length, so the lr goes from 2.50e-04 (step 6) to 6.00e-04 "
                     "(step 7)")
  train.check_resume_config(saved, config, 6, "ckpt")  # unchanged: silent
  assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------- signals
def test_ctrl_c_checkpoints_and_exits_and_a_second_exits_at_once(tmp_path):
  config, args = config_and_args(num_steps=500, checkpoint_every=2, eval_every=1000,
                                 log_every=1, async_checkpoint=False)
  once = tmp_path / "once"
  proc = launch(once, args)
  wait_for(f"{once}.stderr", "step 3/500", proc)
  proc.send_signal(signal.SIGINT)
  wait_for(f"{once}.stderr", "saved, exiting", proc, timeout=120)
  try:  # a preemptible VM kills the process ~30 s after its notice; a clean exit beats that
    proc.wait(timeout=30)  # (tf.data's autotune thread once held the exit for up to 59 s)
  except subprocess.TimeoutExpired:
    proc.kill()
    pytest.fail("the checkpoint was saved but the process was still alive 30 s later")
  stderr = open(f"{once}.stderr").read()
  assert proc.returncode == 0, stderr[-3000:]
  assert "received SIGINT: checkpointing at the next step" in stderr
  assert not user_lines(stderr, "error") and "Traceback" not in stderr
  step = ckpt_lib.Checkpointer(str(once), read_only=True).latest_step()
  assert 4 <= step < 500 and f"checkpoint of step {step} saved, exiting" in stderr

  twice = tmp_path / "twice"
  proc = launch(twice, args)
  wait_for(f"{twice}.stderr", "step 3/500", proc)
  proc.send_signal(signal.SIGINT)
  wait_for(f"{twice}.stderr", "received SIGINT", proc)  # a person presses twice, not at once
  proc.send_signal(signal.SIGINT)
  proc.wait(timeout=60)
  stderr = open(f"{twice}.stderr").read()
  assert proc.returncode == 130, stderr[-3000:]
  assert user_lines(stderr, "error") == [
      "error: interrupted twice: exiting now without a checkpoint of this step (the last "
      "finished checkpoint is intact)"]
  assert "Traceback" not in stderr
  step, variables = restore(twice, config)  # the last finished checkpoint reads back
  assert step >= 2 and all(np.isfinite(x).all() for x in jax.tree.leaves(variables))


def test_sigterm_saves_within_two_steps_of_the_computed_step_not_at_the_next_log(
    tmp_path, monkeypatch):
  """A preemption notice is short: the checkpoint must follow the step being computed when
  the signal came, however far away the next metric fetch (log_every) is. Each step's
  metrics pass through a host callback that sleeps (a slow step) and counts the steps
  computed; the 5th sends SIGTERM to this process. Python dispatches steps faster than they
  compute: with no bound on the steps in flight, this run saved step 11."""
  config, _ = config_and_args(num_steps=200, log_every=1000, checkpoint_every=1000,
                              eval_every=1000, async_checkpoint=False)
  computed = []

  def slow_identity(metrics):
    time.sleep(0.05)
    computed.append(len(computed) + 1)
    if len(computed) == 5:
      os.kill(os.getpid(), signal.SIGTERM)
    return metrics

  real_jit_train_step = train.jit_train_step

  def jit_slow_train_step(*args, **kwargs):
    step = real_jit_train_step(*args, **kwargs)
    slow = jax.jit(lambda m: jax.pure_callback(slow_identity, m, m))

    def slow_step(state, batch, rng):
      state, metrics = step(state, batch, rng)
      return state, slow(metrics)
    return slow_step

  monkeypatch.setattr(train, "jit_train_step", jit_slow_train_step)
  train.train_and_evaluate(config, str(tmp_path / "run"))
  saved = ckpt_lib.Checkpointer(str(tmp_path / "run"), read_only=True).latest_step()
  assert 5 <= saved <= 5 + 2, (saved, len(computed))
  assert len(computed) <= saved + 1  # nothing ran past the saved step but its successor


# ------------------------------------------------------------------------- disks
def test_unwritable_workdir_is_one_error_before_anything(tmp_path):
  _, args = config_and_args(num_steps=2)
  (tmp_path / "a_file").write_text("not a directory")
  code, stderr = run(tmp_path / "a_file" / "run", args)
  assert code == 2, stderr[-3000:]
  assert user_lines(stderr, "error") == [
      f"error: workdir {tmp_path}/a_file/run cannot be written (Not a directory); choose "
      "another --workdir or fix its permissions / free space"]

  # A directory that refuses writes: permissions for a normal user; root ignores those, but
  # not sysfs, which refuses root too.
  if os.geteuid() == 0:
    workdir = "/sys/segjax_test_workdir"
  else:
    os.chmod(tmp_path, 0o500)
    workdir = tmp_path / "run"
  code, stderr = run(workdir, args)
  assert code == 2, stderr[-3000:]
  assert user_lines(stderr, "error") == [
      f"error: workdir {workdir} cannot be written (Operation not permitted); choose another "
      "--workdir or fix its permissions / free space"] if os.geteuid() == 0 else [
      f"error: workdir {workdir} cannot be written (Permission denied); choose another "
      "--workdir or fix its permissions / free space"]
  assert "Traceback" not in stderr


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(six_steps, tmp_path):
  config, args, pristine = six_steps
  workdir = copy_of(pristine, tmp_path / "run")
  for step in ("4", "6"):  # as if the run had stopped after its checkpoint of step 2
    shutil.rmtree(workdir / "checkpoints" / step)
  _, saved = restore(workdir, config)

  # The optimizer state's files are larger than 300 kB, so the save of step 4 fails.
  code, stderr = run(workdir, args, limit_file_size=300_000)
  assert code == 2, stderr[-3000:]
  (line,) = user_lines(stderr, "error")
  assert line.startswith(f"error: {workdir}/checkpoints/4: could not save the checkpoint of "
                         "step 4 (")
  assert "File too large" in line  # the OS error, whichever layer reported it
  assert line.endswith("); the last finished checkpoint (step 2) is intact")
  assert "Traceback" not in stderr and not user_lines(stderr, "warning")
  step, variables = restore(workdir, config)
  assert step == 2
  assert_same_params(variables, saved)
  assert not os.path.exists(workdir / workdir_lib.LOCK_FILE)  # released on the way out


# ------------------------------------------------------------------------- concurrent runs
def test_second_trainer_on_a_workdir_refuses_and_a_dead_ones_lock_is_taken_over(tmp_path):
  _, args = config_and_args(num_steps=500, eval_every=1000, checkpoint_every=1000,
                            log_every=1)
  workdir = tmp_path / "run"
  first = launch(workdir, args)
  try:
    wait_for(f"{workdir}.stderr", "step 2/500", first)
    config_json = (workdir / "config.json").read_text()
    code, stderr = run(tmp_path / "run", args, timeout=120)  # the same workdir
    (line,) = user_lines(stderr, "error")
    assert code == 2 and line.startswith(
        f"error: {workdir} is in use by another trainer (pid {first.pid} on ")
    assert line.endswith(f"wait for it to finish, use another --workdir, or delete "
                         f"{workdir}/train.lock if that run is gone")
    assert first.poll() is None  # the first run is untouched and still training
    assert (workdir / "config.json").read_text() == config_json
  finally:
    first.kill()
    first.wait()
  # kill -9 left its lock file behind; its pid is gone, so the next trainer takes over.
  assert json.loads((workdir / "train.lock").read_text())["pid"] == first.pid
  lock = workdir_lib.RunLock(str(workdir))
  lock.acquire()
  lock.release()


def test_lock_of_another_host_is_stale_only_after_its_heartbeat_stops(tmp_path):
  path = tmp_path / "train.lock"
  path.write_text(json.dumps({"host": "other-host", "pid": 1, "started": "then"}))
  with pytest.raises(WorkdirError, match=r"in use by another trainer \(pid 1 on other-host, "
                                         r"started then, last heartbeat \d+s ago\)"):
    workdir_lib.RunLock(str(tmp_path), stale_after=600).acquire()
  old = time.time() - 700
  os.utime(path, (old, old))
  lock = workdir_lib.RunLock(str(tmp_path), stale_after=600)
  lock.acquire()
  assert json.loads(path.read_text())["pid"] == os.getpid()
  lock.release()
  assert not path.exists()


def test_eval_history_rolls_back_and_replaces_lines(tmp_path):
  h = workdir_lib.EvalHistory(str(tmp_path))
  for step in (3, 6, 9):
    h.add(step, {"mIoU": step / 10})
  h.rollback(6)
  h.add(6, {"mIoU": 0.61})
  h.add(9, {"mIoU": 0.9})
  assert h.read() == [{"step": 3, "mIoU": 0.3}, {"step": 6, "mIoU": 0.61},
                      {"step": 9, "mIoU": 0.9}]
  assert [n for n in os.listdir(tmp_path) if ".tmp" in n] == []
