#!/usr/bin/env python3
"""Pack what the GPU machine lacks into carry folders that fit the device tool's transfers.

The GPU machine (image 'cuda', Python 3.12, torch 2.11, no registry) has everything tvmflow
imports except TVM itself, its FFI, XGBoost (MetaSchedule's cost model) and tornado (TVM's
RPC).  This script:

1. downloads exactly those wheels for CPython 3.12 / manylinux x86-64 (:data:`PINS`, checked
   against pyproject.toml's pins and this venv's versions), into ~/.cache/tvmflow/gpu-wheels;
2. checks each wheel against its own RECORD (sha256 of every member), and that every
   requirement of the carried wheels and of tvmflow is carried or already in the image
   (:data:`IMAGE_HAS`, from the device tool's package list) -- a missing one fails here, not
   on the GPU machine;
3. rewrites each wheel uncompressed (same members, same bytes: RECORD still holds), tars them
   and compresses the tar with xz (a wheel is a zip and does not shrink; its contents do:
   about 110 MB of wheels -> about 70 MB), and splits the result into parts of at most
   ``--part-mib`` each, one folder per transfer: ``.gpu/part1``, ``.gpu/part2``, ...;
4. writes ``manifest.json`` into every part: the wheels (name, version, sha256 of the
   original download), the parts (size, sha256) and the whole archive's sha256, which
   ``device.sh`` checks before it installs anything.

Each ``run`` of the device tool carries one part (with the ~16 MB working tree, under 64 MiB);
the parts are sent back to back while the machine is warm (see README, "On a GPU").

    python scripts/gpu/pack.py            # -> .gpu/part1, .gpu/part2 (ignored by git)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path.home() / ".cache" / "tvmflow" / "gpu-wheels"
PY = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64",
             "manylinux1_x86_64")

# distribution -> exact version carried.  apache-tvm must equal pyproject's pin; tvm-ffi is
# the 0.1.14 build for cp312 (0.1.15 segfaults in save_json); xgboost-cpu is XGBoost
# without its CUDA build and NCCL (6 MB instead of 300), the version tvmflow's venv runs.
PINS = {"apache-tvm": "0.27.0.post1", "apache-tvm-ffi": "0.1.14.post1",
        "xgboost-cpu": "3.2.0", "tornado": "6.6.1", "torch-pruning": "1.6.1"}
# the extras of apache-tvm that tvmflow uses (MetaSchedule, its popen pool, RPC)
EXTRAS = {"apache-tvm": {"meta-schedule", "popen-pool", "rpc"}}

# what the GPU image already holds, among the names tvmflow and the carried wheels need
# (the device tool's KINDS.md package list, read 2026-11-17; torch is 2.11.0 there)
IMAGE_HAS = {"torch", "numpy", "scipy", "onnx", "onnxscript", "onnxruntime", "click", "rich",
             "matplotlib", "filelock", "psutil", "cloudpickle", "ml-dtypes", "cuda-bindings",
             "typing-extensions", "pytest", "packaging", "torchvision"}
# tvmflow's requirements that the image meets with another version than pyproject pins
IMAGE_VERSION_DIFFERS = {"torch": "2.11.0 there (pyproject pins 2.13.0 for the CPU wheel)",
                         "xgboost": "carried as xgboost-cpu",
                         "torchvision": "0.26.0 there, with its torch (pyproject pins 0.28.0)"}


class PackError(Exception):
    pass


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def download(dest: Path) -> dict[str, Path]:
    """The pinned wheels in ``dest`` (downloaded when missing): distribution -> path."""
    dest.mkdir(parents=True, exist_ok=True)
    found = {}
    missing = []
    for dist, version in PINS.items():
        hits = [p for p in dest.glob("*.whl") if norm(p.name.split("-")[0]) == norm(dist)
                and p.name.split("-")[1] == version]
        if hits:
            found[dist] = hits[0]
        else:
            missing.append(f"{dist}=={version}")
    if missing:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", PY, "--implementation", "cp", "--abi", "cp312",
               "--abi", "abi3", "--abi", "none", "-d", str(dest), *missing]
        for plat in PLATFORMS:
            cmd += ["--platform", plat]
        print("downloading", " ".join(missing), flush=True)
        subprocess.run(cmd, check=True)
        return download(dest)
    return found


def check_pins() -> list[str]:
    """PINS agree with pyproject.toml and with what tvmflow runs here; returns notes."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, version
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {norm(re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0]): d for d in deps}
    if f"apache-tvm=={PINS['apache-tvm']}" not in pins["apache-tvm"].replace(" ", ""):
        raise PackError(f"pyproject asks for {pins['apache-tvm']}, the packer carries "
                        f"apache-tvm=={PINS['apache-tvm']}")
    if not PINS["apache-tvm-ffi"].startswith("0.1.14"):
        raise PackError("apache-tvm-ffi must be a 0.1.14 build (pyproject: <0.1.15)")
    notes = []
    for here, carried in (("xgboost", "xgboost-cpu"), ("tornado", "tornado")):
        try:
            v = version(here)
        except PackageNotFoundError:
            continue
        if v != PINS[carried]:
            notes.append(f"note: this venv runs {here} {v}, the GPU machine gets "
                         f"{carried} {PINS[carried]}")
    return notes


def wheel_metadata(path: Path) -> tuple[str, str, list[str]]:
    with zipfile.ZipFile(path) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_name).decode())
    return meta["Name"], meta["Version"], meta.get_all("Requires-Dist") or []


def verify_record(path: Path) -> int:
    """Check every member of the wheel against its RECORD; returns the member count."""
    with zipfile.ZipFile(path) as zf:
        record_name = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        rows = [ln.rsplit(",", 2) for ln in zf.read(record_name).decode().splitlines() if ln]
        for name, digest, _size in rows:
            if not digest:
                continue
            algo, want = digest.split("=", 1)
            got = base64.urlsafe_b64encode(hashlib.new(algo, zf.read(name)).digest()).rstrip(b"=")
            if got.decode() != want:
                raise PackError(f"{path.name}: {name} does not match its RECORD hash")
    return len(rows)


def _marker_ok(marker: str, extras: set[str]) -> bool:
    """Evaluate a requirement's environment marker for CPython 3.12 on x86-64 Linux."""
    try:
        from packaging.markers import Marker
    except ImportError:   # pip's own copy
        from pip._vendor.packaging.markers import Marker
    env = {"python_version": PY, "python_full_version": PY + ".3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    if "extra" not in marker:
        return Marker(marker).evaluate(env)
    return any(Marker(marker).evaluate(dict(env, extra=e)) for e in extras)


def check_requirements(wheels: dict[str, Path]) -> list[str]:
    """Every requirement of the carried wheels and of tvmflow is carried or in the image."""
    import tomllib
    carried = {norm(d) for d in wheels} | {"xgboost"}
    reqs = []
    for dist, path in wheels.items():
        for req in wheel_metadata(path)[2]:
            reqs.append((dist, req, EXTRAS.get(dist, set())))
    for req in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        reqs.append(("tvmflow", req, set()))
    missing, notes = [], []
    for owner, req, extras in reqs:
        spec, _, marker = req.partition(";")
        if marker.strip() and not _marker_ok(marker.strip(), extras):
            continue
        name = norm(re.split(r"[<>=!~ \[(]", spec.strip(), maxsplit=1)[0])
        if name in carried or name in IMAGE_HAS:
            if name in IMAGE_VERSION_DIFFERS and owner == "tvmflow":
                notes.append(f"note: {name}: {IMAGE_VERSION_DIFFERS[name]}")
            continue
        missing.append(f"{name} (needed by {owner}: {req.strip()})")
    if missing:
        raise PackError("neither carried nor in the GPU image: " + "; ".join(sorted(set(missing)))
                        + " -- add it to PINS")
    return sorted(set(notes))


def stored_copy(path: Path) -> bytes:
    """The wheel rewritten with every member stored (uncompressed), member bytes unchanged."""
    out = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            new.external_attr = info.external_attr
            new.compress_type = zipfile.ZIP_STORED
            dst.writestr(new, src.read(info.filename))
    return out.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_archive(wheels: dict[str, Path], cache: Path) -> tuple[bytes, list[dict]]:
    """tar.xz of the stored wheels (cached by the wheels' sha256), and the wheel list."""
    listing = []
    for dist, path in sorted(wheels.items()):
        name, version, _ = wheel_metadata(path)
        listing.append({"file": path.name, "name": name, "version": version,
                        "sha256": sha256(path.read_bytes()), "members": verify_record(path)})
    key = sha256(json.dumps(listing, sort_keys=True).encode())[:16]
    cached = cache / f"carry-{key}.tar.xz"
    if cached.is_file():
        return cached.read_bytes(), listing
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for item in listing:
            data = stored_copy(wheels_by_file(wheels)[item["file"]])
            info = tarfile.TarInfo(item["file"])
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    print(f"compressing {raw.tell() / 2**20:.0f} MiB of stored wheels with xz ...", flush=True)
    blob = lzma.compress(raw.getvalue(), preset=6)
    cached.write_bytes(blob)
    return blob, listing


def wheels_by_file(wheels: dict[str, Path]) -> dict[str, Path]:
    return {p.name: p for p in wheels.values()}


def write_parts(blob: bytes, listing: list[dict], out: Path, part_mib: float) -> list[Path]:
    limit = int(part_mib * 2**20)
    n = -(-len(blob) // limit)
    size = -(-len(blob) // n)              # even parts
    chunks = [blob[i:i + size] for i in range(0, len(blob), size)]
    if out.exists():
        shutil.rmtree(out)
    manifest = {"archive": "carry.tar.xz", "bytes": len(blob), "sha256": sha256(blob),
                "python": PY, "wheels": listing,
                "parts": [{"file": f"carry.tar.xz.{i + 1:02d}", "bytes": len(c),
                           "sha256": sha256(c)} for i, c in enumerate(chunks)]}
    dirs = []
    for i, chunk in enumerate(chunks):
        d = out / f"part{i + 1}"
        d.mkdir(parents=True)
        (d / manifest["parts"][i]["file"]).write_bytes(chunk)
        (d / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        dirs.append(d)
    return dirs


def ensure_ignored(out: Path) -> None:
    """The carry folder must not be tracked (the device tool carries it by name)."""
    exclude = REPO / ".git" / "info" / "exclude"
    try:
        rel = "/" + str(out.resolve().relative_to(REPO)) + "/"
    except ValueError:
        return
    if exclude.parent.is_dir():
        text = exclude.read_text() if exclude.exists() else ""
        if rel not in text.split():
            exclude.write_text(text + ("" if text.endswith("\n") or not text else "\n")
                               + rel + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / ".gpu"), help="carry folder [.gpu]")
    ap.add_argument("--part-mib", type=float, default=40.0,
                    help="largest part, MiB [40: with the ~16 MB working tree under 64 MiB]")
    ap.add_argument("--wheels", default=str(CACHE), help=f"wheel cache [{CACHE}]")
    args = ap.parse_args(argv)
    if not 1 <= args.part_mib <= 60:
        print("Error: --part-mib must be between 1 and 60", file=sys.stderr)
        return 2
    try:
        notes = check_pins()
        wheels = download(Path(args.wheels))
        notes += check_requirements(wheels)
        blob, listing = build_archive(wheels, Path(args.wheels))
        out = Path(args.out)
        dirs = write_parts(blob, listing, out, args.part_mib)
        ensure_ignored(out)
    except (PackError, subprocess.CalledProcessError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    for item in listing:
        print(f"  {item['file']}  ({item['members']} members checked against RECORD)")
    for note in notes:
        print(note)
    total = sum(p.stat().st_size for w in wheels.values() for p in [w])
    print(f"{total / 2**20:.1f} MiB of wheels -> {len(blob) / 2**20:.1f} MiB xz, in "
          f"{len(dirs)} part(s):")
    for d in dirs:
        size = sum(f.stat().st_size for f in d.iterdir())
        print(f"  carry [\"{d.relative_to(REPO) if d.is_relative_to(REPO) else d}\"]  "
              f"{size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
