"""CPU names (LLVM's ``-mcpu``) and the ranking that picks the NEAREST tuning-log set.

Tuning logs are kept per CPU they were tuned on (``schedules/<target>/<cpu>/<variant>/``,
see :mod:`tvmflow.schedules`).  When no set was tuned on the running CPU, compile (and
``tune --adapt``) uses the nearest one.  "Nearest" is this explicit ranking, compared in
order (smaller is nearer)::

    1. vector ISA     0: same ISA class (AVX-512 / AVX2 / AVX / SSE / NEON)
                      1 + |log2(width ratio)| otherwise: AVX2 vs AVX = 1 (same 256-bit width,
                      other ISA), AVX-512 vs AVX2 = 2, AVX-512 vs SSE = 3
    2. family         0: same family (znver*, Intel Xeon, Intel Core, Cortex-A, ...)
                      1: same vendor, other family (Intel Xeon vs Intel Core)
                      2: other vendor, or unknown (znver* vs Intel names)
    3. generation     |launch year difference| (unknown: 99)
    4. trials         more tuning trials first
    5. name           alphabetical (a stable tie-break)

A set for another architecture (aarch64 records for an x86-64 host, CUDA sm_XX) is never a
candidate.  The table below is small on purpose: LLVM names outside it are classified by
their prefix (``znver``, ``cortex-``, ``neoverse-``, ``apple-``, ``sm_``), otherwise they get
an unknown ISA / family / generation and rank after every known one.  The running CPU's ISA
comes from its ``/proc/cpuinfo`` flags, not from the table (a VM may hide AVX-512), and a
set's from what its meta.json recorded when it was tuned.

No TVM here: this module is plain data and arithmetic (unit-tested in tests/test_cpu_sets.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

UNKNOWN_GENERATION = 99

# vector width in bits of each ISA class
ISA_WIDTH = {"avx512": 512, "avx2": 256, "avx": 256, "sse": 128, "neon": 128}
ISA_LABEL = {"avx512": "AVX-512", "avx2": "AVX2", "avx": "AVX", "sse": "SSE", "neon": "NEON"}

# family -> vendor
VENDOR = {"zen": "amd", "bulldozer": "amd", "amd-cat": "amd",
          "intel-xeon": "intel", "intel-core": "intel", "intel-atom": "intel", "intel-phi": "intel",
          "cortex-a": "arm", "cortex-x": "arm", "neoverse": "arm", "apple": "apple",
          "nvidia": "nvidia"}

# LLVM cpu name -> (architecture, ISA class, family, launch year)
_X86 = {
    # AMD
    "znver1": ("avx2", "zen", 2017), "znver2": ("avx2", "zen", 2019),
    "znver3": ("avx2", "zen", 2020), "znver4": ("avx512", "zen", 2022),
    "znver5": ("avx512", "zen", 2024),
    "bdver1": ("avx", "bulldozer", 2011), "bdver2": ("avx", "bulldozer", 2012),
    "bdver3": ("avx", "bulldozer", 2013), "bdver4": ("avx2", "bulldozer", 2015),
    "btver1": ("sse", "amd-cat", 2011), "btver2": ("avx", "amd-cat", 2013),
    # Intel server
    "skylake-avx512": ("avx512", "intel-xeon", 2017), "cascadelake": ("avx512", "intel-xeon", 2019),
    "cooperlake": ("avx512", "intel-xeon", 2020), "icelake-server": ("avx512", "intel-xeon", 2021),
    "sapphirerapids": ("avx512", "intel-xeon", 2023), "emeraldrapids": ("avx512", "intel-xeon", 2023),
    "graniterapids": ("avx512", "intel-xeon", 2024), "graniterapids-d": ("avx512", "intel-xeon", 2025),
    "diamondrapids": ("avx512", "intel-xeon", 2026),
    # Intel client
    "nehalem": ("sse", "intel-core", 2008), "westmere": ("sse", "intel-core", 2010),
    "sandybridge": ("avx", "intel-core", 2011), "ivybridge": ("avx", "intel-core", 2012),
    "haswell": ("avx2", "intel-core", 2013), "broadwell": ("avx2", "intel-core", 2014),
    "skylake": ("avx2", "intel-core", 2015), "cannonlake": ("avx512", "intel-core", 2018),
    "icelake-client": ("avx512", "intel-core", 2019), "tigerlake": ("avx512", "intel-core", 2020),
    "rocketlake": ("avx512", "intel-core", 2021), "alderlake": ("avx2", "intel-core", 2021),
    "raptorlake": ("avx2", "intel-core", 2022), "meteorlake": ("avx2", "intel-core", 2023),
    "arrowlake": ("avx2", "intel-core", 2024), "arrowlake-s": ("avx2", "intel-core", 2024),
    "lunarlake": ("avx2", "intel-core", 2024), "pantherlake": ("avx2", "intel-core", 2025),
    # Intel Atom / E-cores, Xeon Phi
    "silvermont": ("sse", "intel-atom", 2013), "goldmont": ("sse", "intel-atom", 2016),
    "goldmont-plus": ("sse", "intel-atom", 2017), "tremont": ("sse", "intel-atom", 2020),
    "gracemont": ("avx2", "intel-atom", 2021), "sierraforest": ("avx2", "intel-atom", 2024),
    "grandridge": ("avx2", "intel-atom", 2024), "clearwaterforest": ("avx2", "intel-atom", 2025),
    "knl": ("avx512", "intel-phi", 2016), "knm": ("avx512", "intel-phi", 2017),
    # portable levels (no family, no generation)
    "x86-64": ("sse", None, None), "x86-64-v2": ("sse", None, None),
    "x86-64-v3": ("avx2", None, None), "x86-64-v4": ("avx512", None, None),
}
_AARCH64_YEARS = {
    "cortex-a53": 2012, "cortex-a55": 2017, "cortex-a57": 2013, "cortex-a72": 2015,
    "cortex-a73": 2016, "cortex-a75": 2017, "cortex-a76": 2018, "cortex-a77": 2019,
    "cortex-a78": 2020, "cortex-a78ae": 2020, "cortex-a710": 2021, "cortex-a715": 2022,
    "cortex-a720": 2023, "cortex-a725": 2024, "cortex-x1": 2020, "cortex-x2": 2021,
    "cortex-x3": 2022, "cortex-x4": 2023, "neoverse-n1": 2019, "neoverse-e1": 2019,
    "neoverse-v1": 2020, "neoverse-n2": 2021, "neoverse-v2": 2022, "neoverse-v3": 2024,
    "apple-m1": 2020, "apple-m2": 2022, "apple-m3": 2023, "apple-m4": 2024,
}


@dataclass(frozen=True)
class CpuTraits:
    name: str
    arch: str | None          # "x86_64", "aarch64", "cuda" or None (unknown)
    isa: str | None           # a key of ISA_WIDTH, "cuda", or None
    family: str | None        # a key of VENDOR, or None
    year: int | None          # launch year, None when unknown

    @property
    def vendor(self) -> str | None:
        return VENDOR.get(self.family) if self.family else None

    @property
    def isa_label(self) -> str:
        return ISA_LABEL.get(self.isa, self.isa or "unknown ISA")


def cpu_traits(name: str, isa: str | None = None) -> CpuTraits:
    """What the ranking knows about LLVM cpu ``name``.

    ``isa``: the ISA class the CPU's own flags show (the running CPU's ``/proc/cpuinfo``, or
    what a set's meta.json recorded), overriding the table's for an x86 CPU.
    """
    n = (name or "").strip().lower()
    if n in _X86:
        table_isa, family, year = _X86[n]
        arch = "x86_64"
    elif m := re.fullmatch(r"znver(\d+)", n):
        arch, table_isa, family, year = "x86_64", ("avx512" if int(m[1]) >= 4 else "avx2"), "zen", None
    elif n in _AARCH64_YEARS or n.startswith(("cortex-a", "cortex-x", "neoverse-", "apple-")):
        arch, table_isa, year = "aarch64", "neon", _AARCH64_YEARS.get(n)
        family = ("cortex-x" if n.startswith("cortex-x") else "cortex-a" if n.startswith("cortex-")
                  else "neoverse" if n.startswith("neoverse-") else "apple")
    elif re.fullmatch(r"sm_(\d+)[a-z]?", n):
        arch, table_isa, family, year = "cuda", "cuda", "nvidia", None
    else:
        arch = table_isa = family = year = None
    if isa in ("avx512", "avx2", "avx", "sse") and arch in ("x86_64", None):
        table_isa, arch = isa, "x86_64"
    isa = table_isa
    return CpuTraits(n, arch, isa, family, year)


def isa_distance(a: CpuTraits, b: CpuTraits) -> float:
    if a.isa and a.isa == b.isa:
        return 0.0
    wa, wb = ISA_WIDTH.get(a.isa or ""), ISA_WIDTH.get(b.isa or "")
    if not wa or not wb:
        return 9.0
    return 1.0 + abs(math.log2(wa / wb))


def family_distance(a: CpuTraits, b: CpuTraits) -> int:
    if a.family and a.family == b.family:
        return 0
    if a.vendor and a.vendor == b.vendor:
        return 1
    return 2


def generation_distance(a: CpuTraits, b: CpuTraits) -> int:
    if a.year is None or b.year is None:
        return UNKNOWN_GENERATION
    return abs(a.year - b.year)


def cross_arch(a: CpuTraits, b: CpuTraits) -> bool:
    """True when the two are known to be different architectures (never a candidate)."""
    return bool(a.arch and b.arch and a.arch != b.arch)


def rank_key(here: CpuTraits, there: CpuTraits, trials: int = 0) -> tuple:
    """The sort key of a candidate set tuned on ``there`` for a CPU ``here`` (see the module doc)."""
    return (isa_distance(here, there), family_distance(here, there),
            generation_distance(here, there), -int(trials or 0), there.name)


@dataclass(frozen=True)
class Candidate:
    cpu: str
    trials: int = 0
    isa: str | None = None      # from the set's meta.json (detected.isa / detected.avx512)


def rank(here: CpuTraits, candidates: list[Candidate]) -> list[Candidate]:
    """The candidates nearest first; cross-architecture ones are left out."""
    usable = [c for c in candidates if not cross_arch(here, cpu_traits(c.cpu, c.isa))]
    return sorted(usable, key=lambda c: rank_key(here, cpu_traits(c.cpu, c.isa), c.trials))


def why_near(here: CpuTraits, there: CpuTraits) -> str:
    """A few words on how the two CPUs differ, for the terminal and the sidecar."""
    isa = (f"same ISA ({here.isa_label})" if isa_distance(here, there) == 0
           else f"{there.isa_label} vs {here.isa_label} here")
    fam = family_distance(here, there)
    family = ("same family" if fam == 0 else "same vendor, other family" if fam == 1
              else "other vendor")
    return f"{isa}, {family}"


AVX512_FLAGS = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")


def isa_from_flags(flags: set[str]) -> str | None:
    """The x86 ISA class of a CPU from its ``/proc/cpuinfo`` flags (None: no flags known)."""
    if not flags:
        return None
    if all(f in flags for f in AVX512_FLAGS):
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    if "avx" in flags:
        return "avx"
    return "sse"


def isa_from_meta(meta: dict) -> str | None:
    """The ISA class a set's meta.json recorded for the CPU it was tuned on, if any."""
    det = (meta or {}).get("detected") or {}
    if det.get("isa") in ISA_WIDTH:
        return det["isa"]
    if det.get("avx512") is True:
        return "avx512"
    return None


# LLVM feature -> /proc/cpuinfo flag, for the x86 extensions generated code may use
X86_FEATURES = {"avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "bmi2": "bmi2",
                "avx512f": "avx512f", "avx512cd": "avx512cd", "avx512bw": "avx512bw",
                "avx512dq": "avx512dq", "avx512vl": "avx512vl", "avx512vnni": "avx512_vnni",
                "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
                "avx512ifma": "avx512ifma", "avx512vbmi": "avx512vbmi",
                "avxvnni": "avx_vnni", "amx-tile": "amx_tile"}


def absent_x86_features(llvm_features: set[str], flags: set[str]) -> list[str]:
    """Of the extensions LLVM's CPU model has (``llvm_features``), those a CPU whose
    /proc/cpuinfo shows ``flags`` lacks: a VM often hides some of its CPU's extensions (an
    Emerald Rapids guest without AMX or AVX512-FP16), and code using them would not run."""
    return [f for f in X86_FEATURES if f in llvm_features and X86_FEATURES[f] not in flags]
