"""tvmflow as a user gets it: the built wheel, installed (not editable) into a fresh venv.

The wheel must carry every subpackage and the shipped variants, targets and schedules; the
installed tool must work from an empty directory, write only into its workspace (the working
directory, or --workspace / TVMFLOW_HOME), and never into site-packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, venv site-packages, wheel path): tvmflow's wheel in a fresh venv whose
    dependencies come from the test venv through a .pth line (nothing downloaded)."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"                       # build from a copy: a build writes build/, egg-info
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if not name.startswith(("tvmflow/", "models/", "targets/", "schedules/")) and \
                name not in ("pyproject.toml", "README.md"):
            continue
        dst = src / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, dst, follow_symlinks=False)
    dist = base / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", str(src), "-w", str(dist)], check=True,
                   capture_output=True, timeout=300)
    wheel = next(dist.glob("tvmflow-*.whl"))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "zz-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    return py, site, wheel


def _run(py: Path, *args, cwd: Path, env: dict | None = None, timeout: int = 600):
    full = {k: v for k, v in os.environ.items() if not k.startswith("TVMFLOW_")}
    full.update(env or {})
    out = subprocess.run([str(py), "-m", "tvmflow", *map(str, args)], cwd=cwd, env=full,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"tvmflow {' '.join(map(str, args))}:\n{out.stdout}\n{out.stderr}"
    return out


def test_wheel_carries_every_subpackage_and_the_shipped_data(installed):
    _, _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    packages = {str(p.parent.relative_to(REPO)) for p in (REPO / "tvmflow").rglob("__init__.py")}
    for pkg in packages:
        assert f"{pkg}/__init__.py" in names, f"{pkg} is missing from the wheel"
    for kind, n in (("models", "*.toml"), ("targets", "*.toml"), ("schedules", "**/*.json")):
        shipped = sorted(str(p.relative_to(REPO / kind)) for p in (REPO / kind).glob(n))
        assert shipped, kind
        for rel in shipped:
            assert f"tvmflow/shipped/{kind}/{rel}" in names, f"{kind}/{rel} is not in the wheel"


def test_installed_tool_works_from_an_empty_directory(installed, tmp_path):
    py, site, _ = installed
    before = _snapshot(site)
    cwd = tmp_path / "empty"
    cwd.mkdir()
    where = subprocess.run([str(py), "-c", "import tvmflow; print(tvmflow.__file__)"], cwd=cwd,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where          # the wheel, not the checkout
    models = _run(py, "models", "--json", cwd=cwd).stdout
    assert '"pruned-a8"' in models and '"grouped-wide"' in models
    _run(py, "compile", "--target", "host", "--variant", "pruned-a8", cwd=cwd)
    so = cwd / "artifacts" / "host" / "pruned-a8.so"
    assert so.is_file() and so.with_suffix(".json").is_file()
    _run(py, "run", "--module", so, "-o", "out.npy", cwd=cwd)
    assert (cwd / "out.npy").is_file()
    # --workspace: everything goes there, nothing into the working directory
    other = tmp_path / "ws"
    _run(py, "--workspace", other, "compile", "--target", "host", "--variant", "pruned",
         cwd=cwd)
    assert (other / "artifacts" / "host" / "pruned.so").is_file()
    assert not (cwd / "artifacts" / "host" / "pruned.so").exists()
    assert _snapshot(site) == before, "tvmflow wrote into site-packages"
