"""The README's two commands stay true: CI runs the test one verbatim."""
import os

from tests.conftest import REPO


def read(path):
  with open(os.path.join(REPO, path)) as f:
    return f.read()


def test_ci_runs_the_readme_test_command():
  ci_commands = [l.strip() for l in read(".ci/run").splitlines()
                 if l.strip() and not l.lstrip().startswith(("#", "set ", "cd "))]
  assert len(ci_commands) == 1
  readme_lines = [l.strip() for l in read("README.md").splitlines()]
  assert ci_commands[0] in readme_lines
  assert "pytest" in ci_commands[0] and ".[test]" in ci_commands[0]


def test_readme_quickstart_command_uses_the_quickstart_config():
  lines = [l.strip() for l in read("README.md").splitlines()]
  quick = [l for l in lines if l.startswith("python3 -m venv") and "segjax.main" in l]
  assert quick and "--config=configs/quickstart.py" in quick[0]
  assert os.path.exists(os.path.join(REPO, "configs", "quickstart.py"))
