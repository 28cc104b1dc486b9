"""The installed package, seen from outside the repository.

Each check runs in a fresh interpreter whose working directory is a temporary
folder, so the repository root (which holds the ``kernels/`` source folder) is not
on ``sys.path`` and only what is installed can be imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONSAFEPATH")}
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_kernels_only_as_schedgen_kernels(tmp_path):
    code = """
import json, sys
import schedgen.kernels
try:
    import kernels
except ModuleNotFoundError as exc:
    outcome = ["ModuleNotFoundError", exc.name]
else:
    outcome = ["imported", getattr(kernels, "__file__", None)]
print(json.dumps({"path": sys.path, "kernels": outcome, "schedgen_kernels": schedgen.kernels.__name__}))
"""
    out = json.loads(_run(code, tmp_path).stdout)
    assert str(REPO) not in out["path"]  # the check below means something only then
    assert out["schedgen_kernels"] == "schedgen.kernels"
    assert out["kernels"] == ["ModuleNotFoundError", "kernels"], out["kernels"]


def test_core_imports_do_not_pull_heavy_backends(tmp_path):
    code = """
import json, sys
import schedgen, schedgen.build, schedgen.store, schedgen.cli
heavy = ("torch", "cupy", "faiss")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""
    assert json.loads(_run(code, tmp_path).stdout) == []
