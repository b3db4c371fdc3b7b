"""Regenerates the README's performance table: segjax against its references, same machine,
same run.

  python experiments/perf/readme_table.py [--runs=2] [--out=experiments/perf/results.md]
      [--only=R50-D8]   # just the rows whose title has this text; the others stay as they are

Each row is one `python -m segjax.tools.benchmark` command (printed above the table), run
`--runs` times in turn so the spread shows; every number is a median over that command's
timed steps. The date and machine (CPU model, cores, accelerator) are named in every row.
Takes about 40 minutes on 2 CPU cores (the SegFormer rows 25, the CNN rows 15).
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys

import jax

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

B1 = ["--config=configs/segformer_b1_city.py", "--config.eval.mode=whole"]
ROWS = {
    "SegFormer-B1 512x512 batch 2: train / inference vs HF PyTorch": B1 + [
        "--config.data.crop_size=(512, 512)", "--batch_size=2", "--steps=3", "--warmup=1",
        "--compare=hf"],
    "SegFormer-B1 slide inference, one 1024x2048 image (1024 windows, stride 768) vs a "
    "window loop and mmseg; input pipeline (Cityscapes recipe, 1024x1024 crops) vs the "
    "train step": B1 + [
        "--config.data.crop_size=(1024, 1024)", "--batch_size=2", "--steps=2", "--warmup=1",
        "--compare=loop", "--compare=mmseg", "--pipeline"],
}


def cnn_row(config: str, mmseg_config: str) -> list:
  """A CNN against mmseg's model of its mirrored config: SGD train step, whole inference."""
  return [f"--config=configs/{config}.py", "--config.eval.mode=whole",
          "--config.data.crop_size=(512, 512)", "--batch_size=2", "--steps=2", "--warmup=1",
          "--compare=mmseg", f"--mmseg_config={mmseg_config}"]


ROWS["PSPNet R50-D8 512x512 batch 2: train (SGD) / whole inference vs mmseg"] = cnn_row(
    "pspnet_r50_d8_city", "pspnet/pspnet_r50-d8_4xb2-80k_cityscapes-512x1024.py")
ROWS["DeepLabv3+ R50-D8 512x512 batch 2: train (SGD) / whole inference vs mmseg"] = cnn_row(
    "deeplabv3plus_r50_d8_city",
    "deeplabv3plus/deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py")

KEYS = ("train_images_per_s", "hf_train_images_per_s", "train_vs_hf",
        "mmseg_train_images_per_s", "train_vs_mmseg", "eval_images_per_s",
        "hf_eval_images_per_s", "eval_vs_hf", "mmseg_eval_images_per_s", "eval_vs_mmseg",
        "slide_s_per_image", "loop_slide_s_per_image",
        "slide_vs_loop", "mmseg_slide_s_per_image", "slide_vs_mmseg", "pipeline_images_per_s",
        "pipeline_vs_train", "params", "mmseg_params", "compile_train_s", "peak_memory_gib")


def machine() -> str:
  cpu = platform.processor() or "cpu"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  devices = jax.devices()
  return f"{cpu}, {os.cpu_count()} cores, {len(devices)} {devices[0].platform} device(s)"


def run(args):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  proc = subprocess.run([sys.executable, "-m", "segjax.tools.benchmark", *args], cwd=REPO,
                        env=env, capture_output=True, text=True)
  if proc.returncode != 0:
    sys.exit(f"python -m segjax.tools.benchmark {' '.join(args)} failed (exit status "
             f"{proc.returncode}):\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def read_sections(path: str) -> dict:
  """{row title: its section} of a results file this script wrote; {} when there is none."""
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    parts = re.split(r"^\*\*(.+)\*\*$", f.read(), flags=re.M)
  return {title: f"**{title}**{body.rstrip()}" for title, body in zip(parts[1::2], parts[2::2])}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--runs", type=int, default=2)
  parser.add_argument("--out", default=os.path.join(REPO, "experiments/perf/results.md"))
  parser.add_argument("--only", default="", help="run only the rows whose title contains "
                      "this text; the file keeps the other rows' last measurements")
  args = parser.parse_args()
  rows = {t: cmd for t, cmd in ROWS.items() if args.only in t}
  if not rows:
    sys.exit(f"--only={args.only!r} matches no row; the rows are: {list(ROWS)}")
  sections = read_sections(args.out)
  where = f"Measured {datetime.date.today()} on {machine()}."
  for title, cmd in rows.items():
    results = [run(cmd) for _ in range(args.runs)]
    keys = [k for k in KEYS if k in results[0]]
    lines = [f"**{title}**", "", where, "",
             "    python -m segjax.tools.benchmark " + " ".join(cmd), "",
             "| " + " | ".join(["run"] + keys) + " |", "|" + "---|" * (1 + len(keys))]
    lines += ["| " + " | ".join([str(i + 1)] + [str(r[k]) for k in keys]) + " |"
              for i, r in enumerate(results)]
    sections[title] = "\n".join(lines)
    print(sections[title] + "\n", flush=True)
  with open(args.out, "w") as f:  # rows in ROWS order; rows no longer in ROWS are dropped
    f.write("\n\n".join(sections[t] for t in ROWS if t in sections) + "\n")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
