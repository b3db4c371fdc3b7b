"""Where a compiled program spends its time, op by op, from a jax.profiler trace.

  python -m segjax.tools.benchmark --config=... --profile=25

XLA:CPU runs a compiled program as a sequence of thunks (one per fusion, convolution, dot,
copy, ...) and, with `--xla_cpu_enable_xprof_traceme=true` in XLA_FLAGS, records each in the
trace under its HLO instruction name. This module sums the time per instruction over a few
runs and joins it with the compiled HLO text: the instruction's kind (what the fusion
contains: a convolution, a dot, a reduction, elementwise work) and the model path it came from
(the jaxpr `op_name` metadata, e.g. `backbone/block0_0/mlp/dwconv`, with `bwd` for the
transposed pass). Thunks can overlap on the two threads, so the shares are of the summed
thunk time, not of wall time. GPU/TPU traces are better read with xprof/TensorBoard.
"""
import collections
import glob
import os
import re
import tempfile
from typing import Callable, Dict, List

import jax

TRACEME_FLAG = "--xla_cpu_enable_xprof_traceme=true"
_SKIP = ("ThreadpoolListener", "ThunkExecutor", "end: ")
# Ops that make a fusion worth naming by them, in order of precedence.
_KINDS = ("convolution", "dot", "custom-call", "scatter", "gather", "reduce-window",
          "select-and-scatter", "sort", "reduce", "transpose", "concatenate", "pad", "copy")


def enable_traceme():
  """Adds the flag XLA:CPU needs to name its thunks in traces (before the first compile)."""
  flags = os.environ.get("XLA_FLAGS", "")
  if TRACEME_FLAG not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {TRACEME_FLAG}".strip()


def _computations(hlo: str) -> Dict[str, str]:
  """HLO computation name -> its body text."""
  out, name, body = {}, None, []
  for line in hlo.splitlines():
    m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if m and not line.startswith(" "):
      name, body = m.group(1), []
    elif line.startswith("}") and name:
      out[name] = "\n".join(body)
      name = None
    elif name:
      body.append(line)
  return out


def _module_path(op_name: str) -> str:
  """'jit(step)/transpose(jvp(Model))/backbone/block0_0/mlp/mul' -> 'bwd backbone/block0_0/mlp'."""
  direction = "bwd" if "transpose(" in op_name else "fwd"
  parts = [p for p in op_name.split("/")[1:] if "(" not in p]
  return f"{direction} {'/'.join(parts[:-1]) or '-'}"


def instruction_table(hlo: str) -> Dict[str, Dict[str, str]]:
  """Instruction name -> {"kind", "where"} for every instruction of the compiled HLO."""
  comps = _computations(hlo)
  table = {}
  for body in comps.values():
    for line in body.splitlines():
      m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+(?: \S+)*?) ([\w\-]+)\(", line)
      if not m:
        continue
      name, shape, opcode = m.group(1), m.group(2), m.group(3)
      kind = opcode
      called = re.search(r"calls=%?([\w.\-]+)", line)
      if opcode == "fusion" and called and called.group(1) in comps:
        inner = comps[called.group(1)]
        kind = next((f"fusion:{k}" for k in _KINDS if re.search(rf" {k}\(", inner)),
                    "fusion:elementwise")
      op = re.search(r'op_name="([^"]*)"', line)
      if not op and called and called.group(1) in comps:  # a fusion: its ops' metadata
        op = re.search(r'op_name="([^"]*)"', comps[called.group(1)])
      table[name] = {"kind": kind, "where": _module_path(op.group(1)) if op else "-",
                     "shape": re.sub(r"\{[^}]*\}", "", shape)}
  return table


def profile(run: Callable[[], None], hlo: str, steps: int = 2) -> List[dict]:
  """Runs `run()` `steps` times under the profiler; rows sorted by total time.

  Each row: name, kind, where, ms (per run), share (of the summed thunk time).
  """
  totals = collections.Counter()
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp):
      for _ in range(steps):
        run()
    paths = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
    if not paths:
      raise RuntimeError(f"jax.profiler wrote no trace under {tmp}")
    data = jax.profiler.ProfileData.from_file(paths[0])
    for plane in data.planes:
      for line in plane.lines:
        if line.name == "python":
          continue
        for ev in line.events:
          if not ev.name.startswith(_SKIP):
            totals[ev.name] += ev.duration_ns
  table = instruction_table(hlo)
  known = collections.Counter({n: t for n, t in totals.items() if n in table})
  if not known:
    raise RuntimeError("the trace names no instruction of the program: XLA_FLAGS needs "
                       f"{TRACEME_FLAG} before the first compilation (enable_traceme())")
  whole = sum(known.values())
  rows = [{"name": n, **table[n], "ms": t / 1e6 / steps, "share": t / whole}
          for n, t in known.most_common()]
  return rows


def summarise(rows: List[dict], key: str) -> List[dict]:
  """Rows grouped by `key` ("kind" or "where"), sorted by time."""
  groups = collections.defaultdict(lambda: {"ms": 0.0, "share": 0.0, "ops": 0})
  for r in rows:
    g = groups[r[key]]
    g["ms"] += r["ms"]
    g["share"] += r["share"]
    g["ops"] += 1
  return sorted(({key: k, **v} for k, v in groups.items()), key=lambda r: -r["ms"])


def print_profile(rows: List[dict], top: int):
  print(f"\nsummed thunk time per run: {sum(r['ms'] for r in rows):.1f} ms")
  for key in ("kind", "where"):
    print(f"\nby {key}:")
    for g in summarise(rows, key)[:top]:
      print(f"  {g['ms']:9.1f} ms {100 * g['share']:5.1f}%  {g['ops']:4d} ops  {g[key]}")
  print(f"\ntop {top} instructions:")
  for r in rows[:top]:
    print(f"  {r['ms']:9.1f} ms {100 * r['share']:5.1f}%  {r['kind']:<22} {r['where']}  "
          f"{r['shape']} [{r['name']}]")
