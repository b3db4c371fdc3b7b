"""segjax.tools.sweep: planning, the command-line overrides, the report's arithmetic, and a
real two-setting study of configs/test.py run as subprocesses, resumed and collected."""
import dataclasses
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys

import pytest

from segjax.data import synthetic_city
from segjax.errors import ConfigError
from segjax.tools import sweep
from tests.conftest import REPO, load_config, wait_for

# Two tiny settings of configs/test.py, 2 steps each (one evaluation, at the end).
TINY = {"train.num_steps": 2, "train.eval_every": 2, "train.checkpoint_every": 2,
        "train.log_every": 1, "train.num_overlays": 0, "data.synthetic_train_size": 16,
        "data.synthetic_eval_size": 8}
STUDY = sweep.Study(
    name="tiny", description="Does a wider head help a tiny SegFormer?",
    scales={"cpu": sweep.Scale("configs/test.py", TINY),
            "paper": sweep.Scale("configs/segformer_b0_synthetic_city.py")},
    settings=(sweep.Setting("head8", {"model.decode_head.channels": 8}),
              sweep.Setting("head16", {"model.decode_head.channels": 16})),
    seeds=1, measure=("summary",), classes=("disc",),
    plots=(("setting", "mIoU"), ("gflops", "mIoU")))


def test_plan_names_every_run_and_merges_overrides(tmp_path):
  runs = sweep.plan(STUDY, "cpu", str(tmp_path), seeds=2)
  assert [(r.setting.label, r.seed) for r in runs] == [
      ("head8", 0), ("head8", 1), ("head16", 0), ("head16", 1)]
  assert runs[3].workdir == str(tmp_path / "tiny" / "cpu" / "head16" / "seed1")
  assert dict(runs[3].overrides) == {**TINY, "model.decode_head.channels": 16, "seed": 1}
  cmd = runs[3].command("python")
  assert cmd[:4] == ["python", "-m", "segjax.main", "--config=configs/test.py"]
  assert "--config.model.decode_head.channels=16" in cmd and "--config.seed=1" in cmd
  assert [r.setting.label for r in sweep.plan(STUDY, "cpu", str(tmp_path), only=["head16"])] \
      == ["head16"]
  chosen = sweep.Study("c", "", {"cpu": sweep.Scale("x.py:recipe=cpu"), "paper": sweep.Scale(
      "x.py")}, (sweep.Setting("psp", choices="decoder=psp"), sweep.Setting("base")), seeds=1)
  assert [r.config for r in sweep.plan(chosen, "cpu", str(tmp_path))] == [
      "x.py:recipe=cpu,decoder=psp", "x.py:recipe=cpu"]
  assert sweep.plan(chosen, "paper", str(tmp_path))[0].config == "x.py:decoder=psp"
  paper = sweep.plan(STUDY, "paper", str(tmp_path), extra=["data.root=/data/city"])
  assert dict(paper[0].overrides)["data.root"] == "/data/city"
  assert paper[0].config == "configs/segformer_b0_synthetic_city.py"
  assert "train.num_steps" not in dict(paper[0].overrides)


def test_pareto_front_keeps_the_settings_nothing_beats_on_both(tmp_path):
  def row(name, speed, miou, std=0.01):
    return {"setting": name, "n": 3, "img_s": (speed, 0.0), "mIoU": (miou, std)}
  # fast: the fastest; best: the most accurate; tie: equal to best on both (neither beats the
  # other); slow_good is beaten by best (faster and more accurate); mid is slower than fast but
  # more accurate, and faster than best, so it stays; worse_twin is as fast as mid and less
  # accurate; unmeasured (no img_s) is left out.
  table = [row("slow_good", 2.0, 0.25), row("fast", 9.6, 0.20), row("best", 5.3, 0.30),
           row("tie", 5.3, 0.30), row("mid", 7.0, 0.22), row("worse_twin", 7.0, 0.21),
           {"setting": "unmeasured", "n": 3, "mIoU": (0.9, 0.0)}]
  front = sweep.pareto_front(table, "img_s", "mIoU", "higher")
  assert [r["setting"] for r in front] == ["fast", "mid", "best", "tie"]
  # x lower is better (GFLOPs): the same speeds read as costs reverse who wins on x.
  front = sweep.pareto_front(table, "img_s", "mIoU", "lower")
  assert [r["setting"] for r in front] == ["slow_good", "best", "tie"]
  study = dataclasses.replace(STUDY, plots=(("img_s", "mIoU"),), fronts={"img_s": "higher"})
  assert ("Pareto front of mIoU (higher) against img_s (higher), on the means: fast, mid, "
          "best, tie." in sweep.markdown(study, "cpu", table))
  assert [os.path.basename(p) for p in sweep.plot(study, table, str(tmp_path))] == [
      "mIoU_vs_img_s.png"]


def test_plan_refuses_a_bad_study(tmp_path):
  with pytest.raises(ConfigError, match="has no scale 'tpu'"):
    sweep.plan(STUDY, "tpu", str(tmp_path))
  with pytest.raises(ConfigError, match=r"--only: no setting \['head4'\]"):
    sweep.plan(STUDY, "cpu", str(tmp_path), only=["head4"])
  with pytest.raises(ConfigError, match="--set expects key=value, got 'data.root'"):
    sweep.plan(STUDY, "cpu", str(tmp_path), extra=["data.root"])
  with pytest.raises(ConfigError, match="--seeds must be >= 1"):
    sweep.plan(STUDY, "cpu", str(tmp_path), seeds=0)
  twice = sweep.Study("x", "", STUDY.scales, (sweep.Setting("a"), sweep.Setting("a")))
  with pytest.raises(ConfigError, match="evaluation labels must be unique"):
    sweep.plan(dataclasses.replace(STUDY, evaluations=(sweep.Setting("w"), sweep.Setting("w"))),
               "cpu", str(tmp_path))
  with pytest.raises(ConfigError, match="labels must be unique"):
    sweep.plan(twice, "cpu", str(tmp_path))
  for fronts in ({"gflops": "smaller"}, {"params": "lower"}, {"setting": "higher"}):
    with pytest.raises(ConfigError, match=r"fronts\[.*a front needs an x column of plots"):
      sweep.plan(dataclasses.replace(STUDY, fronts=fronts), "cpu", str(tmp_path))
  unknown = sweep.Study("x", "", STUDY.scales, (sweep.Setting("a"),), measure=("flops",))
  with pytest.raises(ConfigError, match="measure 'flops'"):
    sweep.plan(unknown, "cpu", str(tmp_path))


def test_values_format_as_the_config_flag_parser_reads_them():
  from ml_collections import config_flags  # noqa: F401  (the parser the runs use)
  assert sweep.format_value(True) == "true"
  assert sweep.format_value(0.4) == "0.4"
  assert sweep.format_value((0.5, 2.0)) == "(0.5,2.0)"
  assert sweep.format_value((8,)) == "(8,)"
  assert sweep.format_value("focal") == "focal"
  with pytest.raises(ConfigError, match="cannot pass None"):
    sweep.format_value(None)


def test_tpu_launch_lines_are_launch_sh_commands(tmp_path):
  runs = sweep.plan(STUDY, "paper", "gs://bucket/runs", seeds=3)
  lines = sweep.launch_lines(runs, "tpu:my-vm:us-central2-b:v4-8")
  assert len(lines) == 6 and shlex.split(lines[5]) == [
      "./launch.sh", "tpu", "my-vm", "us-central2-b", "v4-8",
      "configs/segformer_b0_synthetic_city.py",
      "gs://bucket/runs/tiny/paper/head16/seed2", "--config.model.decode_head.channels=16",
      "--config.seed=2"]
  flip = sweep.launch_lines(runs[:1], "tpu:vm:z:v4-8", (sweep.Setting("flip", {"eval.flip": True}),))
  assert len(flip) == 2 and flip[1] == flip[0] + " --mode=evaluate --config.eval.flip=true"
  with pytest.raises(ConfigError, match="--launch must be local or tpu:NAME:ZONE"):
    sweep.launch_lines(runs, "tpu:my-vm")


def test_aggregate_gives_mean_and_sample_std_per_setting():
  rows = [{"setting": "a", "seed": s, "step": 9, "mIoU": 0.5 + 0.1 * s, "gflops": 0.982,
           "config": "c"} for s in (0, 2)]
  rows += [{"setting": "a", "seed": 1, "step": 9, "mIoU": 0.6, "gflops": 0.982, "config": "c"},
          {"setting": "b", "seed": 0, "step": 9, "mIoU": 0.6, "IoU.disc": 0.25}]
  a, b = sweep.aggregate(rows)
  assert a["n"] == 3 and a["mIoU"][0] == pytest.approx(0.6)
  assert a["mIoU"][1] == pytest.approx(0.1)  # sample std (n - 1)
  # Equal values (a column measured once per setting) give exactly that value and std 0, not
  # the summation's rounding (a mean of 0.9819999999999999 and a std of 1.4e-16).
  assert a["gflops"] == (0.982, 0.0) and "config" not in a and "seed" not in a
  assert b["n"] == 1 and b["mIoU"][0] == 0.6 and math.isnan(b["mIoU"][1])
  assert b["IoU.disc"][0] == 0.25 and "IoU.disc" not in a
  table = sweep.markdown(STUDY, "cpu", [a, b])
  assert "| a | 3 | 60.00 ± 10.00 | 0.982 |  |" in table
  assert "| b | 1 | 60.00 |  | 25.00 |" in table


def test_measure_passes_the_study_flags_reads_nested_columns_and_caches(tmp_path, monkeypatch):
  study = dataclasses.replace(STUDY, measure=("train_memory", "benchmark"), measure_flags={
      "benchmark": ("--notrain", "--config.data.crop_size=(512, 1024)")})
  run = sweep.plan(study, "cpu", str(tmp_path))[0]
  printed = {"segjax.tools.summary": {"params": 5, "train_memory": {
                 "none": {"temporaries_mib": 12.5, "arguments_mib": 3.0}}},
             "segjax.tools.benchmark": {"eval_images_per_s": 7.0, "image_size": [512, 1024]}}
  commands = []

  def tool(cmd, **kwargs):
    commands.append(cmd)
    return subprocess.CompletedProcess(cmd, 0, "table\n" + json.dumps(printed[cmd[2]]), "")

  monkeypatch.setattr(sweep.subprocess, "run", tool)
  expected = {"train_temporaries_mib": 12.5, "train_arguments_mib": 3.0, "eval_images_per_s": 7.0}
  assert sweep.measure(study, run) == expected
  assert commands[0][2:4] == ["segjax.tools.summary", "--train_memory"]
  assert "--notrain" not in commands[0] and commands[1][-2:] == list(
      study.measure_flags["benchmark"])
  assert sweep.measure(study, run) == expected and len(commands) == 2  # cached per setting
  with pytest.raises(ConfigError, match=r"measure_flags for \['benchmark'\], which the study"):
    sweep.plan(dataclasses.replace(STUDY, measure_flags={"benchmark": ("--notrain",)}), "cpu",
               str(tmp_path))


def _fake_finished_run(run, miou):
  """A workdir as a finished 2-step run leaves it (what result_row and finished read)."""
  os.makedirs(run.workdir)
  with open(os.path.join(run.workdir, "config.json"), "w") as f:
    json.dump({"train": {"num_steps": 2}}, f)
  with open(os.path.join(run.workdir, "eval_results.json"), "w") as f:
    json.dump({"step": 2, "metrics": {"mIoU": miou, "aAcc": 0.9, "IoU": {"disc": miou}}}, f)


def test_recorded_rows_stand_for_runs_whose_workdir_is_gone(tmp_path, monkeypatch, capsys):
  runs_dir, out = tmp_path / "runs", tmp_path / "out"
  measured = []

  def tool(cmd, **kwargs):  # summary, measured again wherever its cache is gone
    measured.append(cmd)
    return subprocess.CompletedProcess(cmd, 0, json.dumps({"params": 5, "gflops": 1.5}), "")

  monkeypatch.setattr(sweep.subprocess, "run", tool)
  runs = sweep.plan(STUDY, "cpu", str(runs_dir), seeds=2)
  for run, miou in zip(runs, (0.25, 0.35, 0.3, 0.4)):
    _fake_finished_run(run, miou)
  rows = sweep.report(STUDY, "cpu", runs, str(out))
  assert [(r["setting"], r["seed"], r["mIoU"]) for r in rows] == [
      ("head8", 0, 0.25), ("head8", 1, 0.35), ("head16", 0, 0.3), ("head16", 1, 0.4)]
  assert len(measured) == 2 and rows[0]["gflops"] == 1.5

  # The machine is gone: every workdir deleted. The report is rebuilt from the record, its
  # measured columns measured again; running the study starts nothing.
  import shutil
  shutil.rmtree(runs_dir)
  assert sweep.report(STUDY, "cpu", runs, str(out)) == rows and len(measured) == 4
  monkeypatch.setattr(sweep, "execute", lambda run: pytest.fail(f"retrained {run.workdir}"))
  sweep.FLAGS.unparse_flags()
  sweep.FLAGS(["x", f"--runs={runs_dir}", f"--out={out}", "--seeds=2", "--only=head16"])
  try:
    sweep.main_with(STUDY, os.path.join(REPO, "experiments", "tiny.py"))
  finally:
    sweep.FLAGS.unparse_flags()
  assert "head16 seed 1: recorded in" in capsys.readouterr().out
  # --only=head16 ran (here: skipped) head16 alone, and the report still has head8's rows.
  assert [json.loads(l) for l in open(out / "results.jsonl")] == rows

  # A recorded row counts only for the same run: another override, or a workdir that exists
  # (here unfinished, to be resumed), is not stood in for; a corrupt record is one error.
  changed = dataclasses.replace(STUDY, settings=(
      sweep.Setting("head8", {"model.decode_head.channels": 12}), STUDY.settings[1]))
  assert sorted(sweep.recorded(changed, "cpu", sweep.plan(changed, "cpu", str(runs_dir),
                                                          seeds=2), str(out))) == [
      ("head16", 0), ("head16", 1)]
  os.makedirs(runs[0].workdir)
  assert ("head8", 0) not in sweep.recorded(STUDY, "cpu", runs, str(out))
  assert [(r["setting"], r["seed"]) for r in sweep.report(STUDY, "cpu", runs, str(out))] == [
      ("head8", 1), ("head16", 0), ("head16", 1)]
  with open(out / "results.jsonl", "a") as f:
    f.write("{not json\n")
  with pytest.raises(ConfigError, match=r"results.jsonl line 4 is not a results row"):
    sweep.recorded(STUDY, "cpu", runs, str(out))


def test_a_tiny_study_runs_resumes_and_reports(tmp_path, monkeypatch, capsys):
  runs_dir, out = tmp_path / "runs", tmp_path / "out"
  sweep.FLAGS.unparse_flags()
  sweep.FLAGS(["x", f"--runs={runs_dir}", f"--out={out}"])
  sweep.main_with(STUDY, os.path.join(REPO, "experiments", "tiny.py"))
  rows = [json.loads(l) for l in open(out / "results.jsonl")]
  assert [(r["setting"], r["seed"], r["step"]) for r in rows] == [("head8", 0, 2),
                                                                   ("head16", 0, 2)]
  for row in rows:  # every number is the run's own
    saved = json.load(open(runs_dir / "tiny" / "cpu" / row["setting"] / "seed0" /
                           "eval_results.json"))
    assert row["mIoU"] == saved["metrics"]["mIoU"] and 0 < row["mIoU"] <= 1
    assert row["IoU.disc"] == saved["metrics"]["IoU"]["disc"]
    assert row["run_minutes"] > 0 and row["params"] > 0 and row["gflops"] > 0
  assert rows[1]["params"] > rows[0]["params"]  # the wider head has more parameters
  table = (out / "results.md").read_text()
  assert "Does a wider head help" in table and "| head16 | 1 |" in table
  assert (out / "mIoU_vs_setting.png").stat().st_size > 1000
  assert (out / "mIoU_vs_gflops.png").exists()

  # A second invocation starts no run (all finished) and reports the same rows.
  monkeypatch.setattr(sweep, "execute", lambda run: pytest.fail(f"reran {run.workdir}"))
  sweep.main_with(STUDY, os.path.join(REPO, "experiments", "tiny.py"))
  assert "head16 seed 0: finished" in capsys.readouterr().out
  assert [json.loads(l) for l in open(out / "results.jsonl")] == rows
  # Test-time protocols over the finished runs: one row per (run, protocol), each the run's
  # own --mode=evaluate result; the flipped protocol really differs from the plain one.
  protocols = dataclasses.replace(STUDY, settings=STUDY.settings[:1], measure=(), evaluations=(
      sweep.Setting("plain"), sweep.Setting("flip", {"eval.flip": True})))
  monkeypatch.undo()
  sweep.main_with(protocols, os.path.join(REPO, "experiments", "tiny.py"))
  evals = [json.loads(l) for l in open(out / "results.jsonl")]
  assert [(r["setting"], r["seed"]) for r in evals] == [("plain", 0), ("flip", 0)]
  assert evals[0]["mIoU"] == pytest.approx(rows[0]["mIoU"], abs=1e-6)  # = training's eval
  assert evals[1]["mIoU"] != evals[0]["mIoU"] and evals[1]["evaluation"] == {"eval.flip": True}
  assert evals[1]["eval_seconds"] > 0
  saved = json.load(open(runs_dir / "tiny" / "cpu" / "head8" / "seed0" / "sweep_eval" /
                         "flip.json"))
  assert saved["metrics"]["mIoU"] == evals[1]["mIoU"]
  # --collect with one run unfinished reports the finished one only.
  (runs_dir / "tiny" / "cpu" / "head8" / "seed0" / "eval_results.json").unlink()
  sweep.FLAGS.unparse_flags()
  sweep.FLAGS(["x", f"--runs={runs_dir}", f"--out={out}", "--collect"])
  sweep.main_with(STUDY, os.path.join(REPO, "experiments", "tiny.py"))
  assert [json.loads(l)["setting"] for l in open(out / "results.jsonl")] == ["head16"]
  sweep.FLAGS.unparse_flags()


def test_a_failing_run_stops_the_study_with_its_log(tmp_path):
  broken = sweep.Study("broken", "", {"cpu": sweep.Scale("configs/test.py", TINY)},
                       (sweep.Setting("bad", {"train.num_stepz": 2}),), seeds=1)
  run, = sweep.plan(broken, "cpu", str(tmp_path))
  with pytest.raises(RuntimeError, match=r"run .*bad/seed0 failed \(exit status 2\)"):
    sweep.execute(run)
  assert "error: unknown config key 'train.num_stepz'" in open(run.log).read()


def test_sigterm_to_the_sweep_checkpoints_its_run_and_keeps_the_time(tmp_path):
  """A preempted sweep passes the notice on: the run saves and exits (not trains on, orphaned)
  and the minutes it ran still count in the study's run_minutes."""
  script = tmp_path / "long.py"
  script.write_text(
      "from segjax.tools import sweep\n"
      "sweep.main(sweep.Study('long', '', {'cpu': sweep.Scale('configs/test.py', {\n"
      "    'train.num_steps': 500, 'train.log_every': 1, 'train.eval_every': 1000,\n"
      "    'train.checkpoint_every': 1000})}, (sweep.Setting('a', {}),), seeds=1))\n")
  runs = tmp_path / "runs"
  proc = subprocess.Popen([sys.executable, str(script), f"--runs={runs}"], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO}, stderr=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, text=True)
  log = runs / "long" / "cpu" / "a" / "seed0.log"
  try:
    wait_for(log, "step 3/500", proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 1 and "sweep: stopped during" in stderr, stderr[-2000:]
  step = int(re.search(r"checkpoint of step (\d+) saved, exiting", log.read_text()).group(1))
  assert 3 <= step < 500
  assert json.load(open(f"{runs}/long/cpu/a/seed0.time.json"))["wall_s"] > 0


def test_the_ablation_bed_builds_every_choice_and_refuses_bad_ones():
  """configs/synthetic_city_ablation.py, the config the studies sweep: each decoder builds on
  the same encoder (same backbone parameters), aux adds a head, and bad choices are named."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from configs import synthetic_city_ablation as bed
  from segjax import models
  encoders = {}
  for decoder in bed.DECODERS:
    config = bed.get_config(f"recipe=cpu,decoder={decoder},aux=0.4")
    model = models.build_model(config)
    x = jnp.zeros((1, 64, 128, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    logits, aux = jax.eval_shape(lambda v: model.apply(v, x), shapes)
    assert logits.shape[-1] == 19 and len(aux) == 1 and model.aux_loss_weights == (0.4,)
    encoders[decoder] = sum(int(np.prod(p.shape)) for p in
                            jax.tree.leaves(shapes["params"]["backbone"]))
  assert len(set(encoders.values())) == 1  # one encoder under every decoder
  # A dilated ResNet-18 (study 2): the single-map heads see the stride the choice names, with
  # the same weights at every stride, and ASPP's dilations span the same pixels.
  x = jnp.zeros((1, 128, 256, 3))
  resnets = {}
  for stride in (32, 16, 8):
    config = bed.get_config(f"recipe=cpu,encoder=resnet18,output_stride={stride},decoder=aspp")
    assert config.model.decode_head.dilations == (1,) + tuple(d * 32 // stride for d in (2, 4, 6))
    model = models.build_model(config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    logits, _ = jax.eval_shape(lambda v: model.apply(v, x), shapes)  # at the head's map
    assert logits.shape[1:3] == (128 // stride, 256 // stride)
    resnets[stride] = sum(int(np.prod(p.shape)) for p in
                          jax.tree.leaves(shapes["params"]["backbone"]))
  assert len(set(resnets.values())) == 1 and resnets[8] != encoders["aspp"]
  cpu = bed.get_config("recipe=cpu")
  assert cpu.train.num_steps == 400 and cpu.train.batch_size == 4 and cpu.model.decode_head.channels == 128
  assert bed.get_config("recipe=cityscapes").data.name == "cityscapes"
  assert bed.get_config("recipe=cityscapes").model.decode_head.channels == 256
  assert bed.get_config("depth=1").model.backbone.depths == (1, 1, 1, 1)
  assert bed.get_config("loss=lovasz").model.decode_head.loss[1]["name"] == "lovasz"
  fast = bed.get_config("recipe=cpu,model=fast_scnn_city")
  assert fast.model.backbone.name == "fast_scnn" and fast.optim.name == "adamw"
  assert fast.train.num_steps == 400
  for bad, match in (("model=fast", "no configs/fast.py"), ("decoder=psa", "decoder='psa' is not one of"), ("lr=3", "bad choice 'lr=3'"),
                     ("loss=l2", "loss='l2'"), ("recipe=ade", "recipe='ade'"),
                     ("encoder=vgg16", "encoder='vgg16'"), ("output_stride=4", "output_stride='4'"),
                     ("output_stride=8", "needs a ResNet encoder"),
                     ("encoder=resnet18,depth=3", "encoder=resnet18 has none")):
    with pytest.raises(ValueError, match=match):
      bed.get_config(bad)


def test_every_study_script_plans_at_both_scales_and_names_real_config_keys(tmp_path):
  """Each experiments/<study>.py: its runs plan at --scale=cpu and paper, each run's config
  loads with its choices, and every override (the runs', the evaluations', the measuring
  tools' --config.* flags) names a key the config has: a typo fails here, not an hour in."""
  import glob
  import importlib.util
  scripts = sorted(glob.glob(os.path.join(REPO, "experiments", "*.py")))
  studies = []
  for path in scripts:
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, "STUDY"):
      studies.append(module.STUDY)
  assert {s.name for s in studies} >= {"decoders", "output_stride", "losses", "deep_supervision",
                                      "inference", "segformer_scaling", "augmentation",
                                      "realtime"}
  for study in studies:
    for scale in ("cpu", "paper"):
      for run in sweep.plan(study, scale, str(tmp_path), seeds=1):
        file, _, arg = run.config.partition(":")
        config = load_config(os.path.basename(file)[:-3], arg or None)
        keys = [k for k, _ in run.overrides]
        keys += [k for e in study.evaluations for k in e.overrides]
        keys += [f.split("=")[0][len("--config."):] for flags in study.measure_flags.values()
                 for f in flags if f.startswith("--config.")]
        for key in keys:
          node = config
          for part in key.split("."):
            assert part in node, f"{study.name} {run.setting.label}: no config key {key!r}"
            node = node[part]
    # The per-class columns name synthetic_city's (Cityscapes') classes: a misspelt one would
    # fail only when the report is written, after the runs.
    assert set(study.classes) <= set(synthetic_city.CLASS_NAMES), (study.name, study.classes)
