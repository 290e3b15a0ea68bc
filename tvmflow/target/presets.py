"""Target presets: one TOML file per board in ``targets/`` (or ``TVMFLOW_TARGET_PATH``).

A preset names the TVM target (a JSON dict in TVM 0.27), the host target, the cross compiler
(and the apt package that provides it), the default RPC key and the device kind.  ``"auto"``
values in the host preset are detected when it is loaded, and what was detected is kept in
``TargetPreset.detected``: the host preset generates code for the exact CPU it runs on (LLVM's
name for it, e.g. ``znver2`` or ``emeraldrapids``).  ``TargetPreset.cpu_key`` names the CPU a
target's tuning logs are kept under (``schedules/<target>/<cpu_key>/<variant>/``).
"""

from __future__ import annotations

import difflib
import os
import platform
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from tvmflow.errors import TvmflowError
from tvmflow.threads import host_cores
from tvmflow.workspace import search_dirs

REQUIRED = ("name", "description", "device", "rpc_key", "target")
OPTIONAL = ("host", "cross_compiler", "cross_package", "arch_env", "emulated")
DEVICES = ("cpu", "cuda")
AVX512 = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")
GENERIC_CPU = "generic"


@dataclass(frozen=True)
class TargetPreset:
    name: str
    description: str
    device: str  # "cpu" or "cuda"
    rpc_key: str
    target: dict[str, Any]
    host: dict[str, Any] | None = None
    cross_compiler: str | None = None
    cross_package: str | None = None
    emulated: bool = False
    detected: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    @property
    def is_cuda(self) -> bool:
        return self.target.get("kind") == "cuda"

    @property
    def arch(self) -> str | None:
        return self.target.get("arch")

    @property
    def cpu_key(self) -> str:
        """The CPU this target's tuning logs are kept under: its LLVM ``mcpu`` (for the host
        preset the detected CPU, resolved once when the preset is loaded), the SM arch for
        CUDA targets, ``generic`` for an llvm target without an mcpu."""
        if self.is_cuda:
            return str(self.arch or "cuda")
        return str(self.target.get("mcpu") or GENERIC_CPU)

    @property
    def cpu_isa(self) -> str | None:
        """The ISA class of the CPU the code runs on, as detected (host), else from the table."""
        from tvmflow.target.cpus import cpu_traits
        return self.detected.get("isa") or cpu_traits(self.cpu_key).isa

    @property
    def cpu_triple(self) -> str:
        """The triple code for the CPU side runs under (target itself, or its host)."""
        cpu = self.host if self.is_cuda else self.target
        return (cpu or {}).get("mtriple") or "x86_64-linux-gnu"

    @property
    def is_cross(self) -> bool:
        return not self.cpu_triple.startswith("x86_64")

    def tvm_target(self):
        from tvmflow.adapter.target import make_target
        return make_target(self.target, self.host)

    def to_json(self) -> dict[str, Any]:
        return dict(name=self.name, description=self.description, device=self.device,
                    rpc_key=self.rpc_key, target=self.target, host=self.host,
                    cross_compiler=self.cross_compiler, cross_package=self.cross_package,
                    emulated=self.emulated, detected=self.detected, cpu_key=self.cpu_key,
                    source=self.source)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TargetPreset":
        """The preset as :meth:`to_json` wrote it (e.g. in a sidecar): what was resolved
        then, not detected again (``cpu_key`` is derived, so it is not read back)."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names - {"cpu_key"}
        if unknown:
            raise TvmflowError(f"target record with unknown fields {sorted(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in names})


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def _detect(target: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    from tvmflow.adapter.target import system_cpu
    target = dict(target)
    detected: dict[str, Any] = {}
    if target.get("mcpu") == "auto":
        # code for the exact CPU it runs on; tuning logs from other CPUs still apply (their
        # schedule traces are re-applied for this CPU's target: tvmflow.schedules)
        from tvmflow.target.cpus import isa_from_flags
        cpu = system_cpu()
        flags = _cpu_flags()
        detected.update(cpu_model=_cpu_model(), llvm_cpu=cpu,
                        avx512=all(f in flags for f in AVX512), isa=isa_from_flags(flags))
        target["mcpu"] = cpu
        detected["mcpu"] = target["mcpu"]
        off = _hidden_features(cpu, flags)
        if off:       # LLVM's model of the CPU has them, this (virtual) CPU does not
            target["mattr"] = [*target.get("mattr", []), *(f"-{f}" for f in off)]
            detected["mattr"] = target["mattr"]
    if target.get("num-cores") == "auto":
        target["num-cores"] = host_cores()
        detected["num-cores"] = target["num-cores"]
    return target, detected


def _hidden_features(cpu: str, flags: set[str]) -> list[str]:
    """x86 extensions of LLVM's ``cpu`` that this machine's /proc/cpuinfo does not show."""
    if not flags or platform.machine().lower() not in ("x86_64", "amd64"):
        return []
    from tvmflow.adapter.target import cpu_features
    from tvmflow.target.cpus import absent_x86_features
    return absent_x86_features(cpu_features(cpu), flags)


def target_dirs() -> list[Path]:
    """Where target presets are looked for, first wins: ``TVMFLOW_TARGET_PATH``, the
    workspace's ``targets/``, the shipped presets."""
    return search_dirs("targets", "TVMFLOW_TARGET_PATH")


def _scan() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for directory in target_dirs():
        if directory.is_dir():
            for path in sorted(directory.glob("*.toml")):
                found.setdefault(path.stem, path)
    return found


def list_targets() -> list[str]:
    return list(_scan())


def load_preset(path: Path) -> TargetPreset:
    where = f"target preset {path}"
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TvmflowError(f"malformed {where}: {exc}") from None
    except OSError as exc:
        raise TvmflowError(f"cannot read {where}: {exc.strerror}") from None
    for key in REQUIRED:
        if key not in data:
            raise TvmflowError(f"{where}: missing field '{key}'")
    unknown = set(data) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        raise TvmflowError(f"{where}: unknown field(s) {sorted(unknown)}")
    if data["device"] not in DEVICES:
        raise TvmflowError(f"{where}: field 'device' must be one of {DEVICES}, got {data['device']!r}")
    if not isinstance(data["target"], dict) or "kind" not in data["target"]:
        raise TvmflowError(f"{where}: field 'target' must be a table with a 'kind'")
    if data.get("host") is not None and not isinstance(data["host"], dict):
        raise TvmflowError(f"{where}: field 'host' must be a table")
    target, detected = _detect(data["target"])
    host = data.get("host")
    if data["device"] == "cuda" and target["kind"] != "cuda":
        raise TvmflowError(f"{where}: device 'cuda' needs a target of kind 'cuda', got {target['kind']!r}")
    if host is not None:
        host, host_detected = _detect(host)
        detected.update({f"host.{k}": v for k, v in host_detected.items()})
    for part, label in ((target, "target"), (host, "host")):
        _check_mcpu(part, f"{where}: {label}")
    arch_env = data.get("arch_env")
    arch_where = where
    if arch_env and os.environ.get(arch_env):
        target["arch"] = os.environ[arch_env]
        detected["arch"] = f"{target['arch']} (from ${arch_env})"
        arch_where = f"${arch_env} (target {data['name']})"
    if target["kind"] == "cuda":
        _check_arch(target.get("arch"), arch_where)
        if not isinstance(target.get("max_threads_per_block"), int):
            raise TvmflowError(f"{where}: a CUDA target needs max_threads_per_block (1024 on "
                               "every NVIDIA GPU since Kepler): MetaSchedule's thread binding "
                               "and GPU code check read it (max_num_threads is not enough)")
    return TargetPreset(name=data["name"], description=data["description"], device=data["device"],
                        rpc_key=data["rpc_key"], target=target, host=host,
                        cross_compiler=data.get("cross_compiler") or None,
                        cross_package=data.get("cross_package") or None,
                        emulated=bool(data.get("emulated", False)),
                        detected=detected, source=str(path))


def _check_mcpu(part: dict[str, Any] | None, where: str) -> None:
    """An llvm target's ``mcpu`` must be a CPU LLVM knows for its triple: LLVM would otherwise
    warn once and build generic code, and the tuning logs would be filed under a made-up CPU."""
    if not part or part.get("kind") != "llvm" or part.get("mcpu") is None:
        return
    from tvmflow.adapter.target import cpu_names, is_valid_cpu
    mcpu, triple = part["mcpu"], part.get("mtriple")
    if isinstance(mcpu, str) and is_valid_cpu(mcpu, triple):
        return
    close = difflib.get_close_matches(str(mcpu), cpu_names(triple), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise TvmflowError(f"{where}: LLVM knows no CPU {mcpu!r} for "
                       f"{triple or 'x86_64-linux-gnu'}{hint}")


def _check_arch(arch: Any, where: str) -> None:
    import re
    if not isinstance(arch, str) or not re.fullmatch(r"sm_\d{2,3}[a-z]?", arch):
        raise TvmflowError(f"{where}: invalid CUDA arch {arch!r}; expected the form sm_XY, "
                           "e.g. sm_87 (Jetson Orin) or sm_90 (H100)")


def get_target(name: str | TargetPreset) -> TargetPreset:
    """The preset called ``name``; a preset already resolved is returned as it is (so a
    library function may take either, and the CLI resolves a name once)."""
    if isinstance(name, TargetPreset):
        return name
    found = _scan()
    if name not in found:
        close = difflib.get_close_matches(name, list(found), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise TvmflowError(f"unknown target {name!r}{hint} (known targets: {', '.join(found)})")
    return load_preset(found[name])


def list_presets(on_error: Callable[[TvmflowError], None] | None = None) -> list[TargetPreset]:
    """Every preset, loaded.  A malformed file is an error naming it, or, with ``on_error``,
    handed to it and left out (``tvmflow targets`` warns and lists the others)."""
    presets = []
    for path in _scan().values():
        try:
            presets.append(load_preset(path))
        except TvmflowError as exc:
            if on_error is None:
                raise
            on_error(exc)
    return presets


def cross_package(preset: TargetPreset) -> str:
    """The apt package that provides the preset's cross compiler."""
    if preset.cross_package:
        return preset.cross_package
    cc = preset.cross_compiler or ""
    for tool in ("g++", "gcc", "clang++", "clang"):
        if cc.endswith("-" + tool):
            return f"{tool}-{cc[:-len(tool) - 1]}"
    return cc


def find_cross_compiler(preset: TargetPreset) -> str | None:
    """Path of the preset's cross compiler, None when it needs none.

    A missing compiler is a TvmflowError that names the apt package to install.
    """
    import shutil
    if not preset.cross_compiler:
        return None
    found = shutil.which(preset.cross_compiler)
    if found is None:
        raise TvmflowError(f"cross compiler {preset.cross_compiler} for target {preset.name} is not "
                           "installed", hint=f"apt-get install {cross_package(preset)}")
    return found


def toolchain_status(preset: TargetPreset) -> dict[str, Any]:
    """What this machine has for building the preset's modules (for ``tvmflow targets``)."""
    import shutil
    status: dict[str, Any] = {}
    if preset.cross_compiler:
        status["cross_compiler"] = shutil.which(preset.cross_compiler)
        if status["cross_compiler"] is None:
            status["install"] = f"apt-get install {cross_package(preset)}"
    if preset.is_cuda:
        try:
            from tvmflow.adapter.cuda import find_nvcc
            status["nvcc"] = find_nvcc()
        except TvmflowError:
            status["nvcc"] = None
    return status
