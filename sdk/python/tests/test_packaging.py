"""`pip install ./sdk/python` builds a typed, dependency-free package."""

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("pip", "setuptools", "wheel")), reason="pip, setuptools and wheel are needed to build")
def test_builds_a_typed_wheel_without_dependencies(tmp_path):
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".pytest_cache", "tests"))
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)], check=True)
    (whl,) = [p for p in os.listdir(out) if p.endswith(".whl")]
    with zipfile.ZipFile(out / whl) as z:
        names = set(z.namelist())
        meta = z.read([n for n in names if n.endswith("METADATA")][0]).decode()
    assert {"vigil/py.typed", "vigil/client.py", "vigil/adapters/langchain.py", "vigil/adapters/openai_agents.py"} <= names
    requires = [l for l in meta.splitlines() if l.startswith("Requires-Dist:")]
    assert all("extra ==" in l for l in requires), f"runtime dependencies: {requires}"


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy (Debian's python3-mypy) is not installed")
def test_types_check_strict():
    out = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", os.path.join(ROOT, "src", "vigil")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
