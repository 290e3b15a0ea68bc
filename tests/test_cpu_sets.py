"""Tuning logs per CPU: the cpu key, the ranking that picks the nearest set, which set compile
uses (this CPU's, else the nearest, said in the terminal and the sidecar), and run's check
that a module's CPU extensions exist here.

The ranking and set choice use synthetic logs and fixed CPUs (any machine gives the same
answers); one real compile applies the shipped emeraldrapids set through the nearest-set path
on whatever x86 CPU runs the tests (on an emeraldrapids machine, as if it were another CPU).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tvmflow.tuning import schedules as S
from tvmflow.target.cpus import Candidate, cpu_traits, isa_from_flags, rank, rank_key, why_near
from tvmflow.errors import TvmflowError
from tvmflow.target.presets import _cpu_flags, get_target
from tvmflow.workspace import shipped_dir

SHIPPED = shipped_dir("schedules") / "host" / "emeraldrapids"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("TVMFLOW_TARGET_PATH", "TVMFLOW_CUDA_ARCH", "TVMFLOW_SCHEDULES"):
        monkeypatch.delenv(var, raising=False)


# ------------------------------------------------------------------ the cpu key


def test_host_cpu_key_is_the_detected_cpu():
    from tvmflow.adapter.target import system_cpu
    p = get_target("host")
    # code for the exact CPU (not the portable x86-64-v4 level), and the logs kept under it
    assert p.cpu_key == p.target["mcpu"] == p.detected["llvm_cpu"] == system_cpu() != "auto"
    assert p.detected["isa"] == isa_from_flags(_cpu_flags())
    assert p.to_json()["cpu_key"] == p.cpu_key
    assert S.schedule_dir("host", "pruned", Path("/r")) == Path("/r/host") / p.cpu_key / "pruned"
    assert S.schedule_dir(p, "pruned", Path("/r"), cpu="emeraldrapids") == \
        Path("/r/host/emeraldrapids/pruned")


def test_fixed_and_cuda_cpu_keys(monkeypatch, tmp_path):
    assert get_target("rpi4").cpu_key == "cortex-a72"
    assert get_target("jetson-orin").cpu_key == "sm_87"
    assert get_target("h100").cpu_key == "sm_90"
    monkeypatch.setenv("TVMFLOW_CUDA_ARCH", "sm_86")
    assert get_target("cuda").cpu_key == "sm_86"
    (tmp_path / "plain.toml").write_text(textwrap.dedent("""\
        name = "plain"
        description = "llvm without an mcpu"
        device = "cpu"
        rpc_key = "plain"
        target = { kind = "llvm" }
        """))
    monkeypatch.setenv("TVMFLOW_TARGET_PATH", str(tmp_path))
    assert get_target("plain").cpu_key == "generic"


def test_shipped_host_logs_sit_in_the_set_of_the_cpu_they_were_tuned_on():
    """Each shipped host log is in the directory of the CPU its meta.json says it was tuned
    on (the emeraldrapids sets, and the znver2 ones tuned at full parallelism)."""
    rows = [r for r in S.list_schedules(shipped_dir("schedules")) if r["target"] == "host"]
    assert {"emeraldrapids", "znver2"} <= {r["cpu"] for r in rows}
    for r in rows:
        meta = S.load_meta(Path(r["path"]))
        assert meta.cpu == meta.detected["llvm_cpu"] == r["cpu"] == Path(r["path"]).parent.name
        assert meta.target["mcpu"] in (r["cpu"], "x86-64-v4")  # v4: the older logs
        assert r["integrity"] == "ok"


# ------------------------------------------------------------------ the ranking


def order(here: str, *cands, isa: str | None = None) -> list[str]:
    cs = [c if isinstance(c, Candidate) else Candidate(c) for c in cands]
    return [c.cpu for c in rank(cpu_traits(here, isa), cs)]


def test_ranking_vector_isa_first_then_family_then_generation():
    # AVX2 here: the AVX2 sets first (same family first), then the AVX-512 ones
    assert order("znver2", "emeraldrapids", "haswell", "znver4", "znver3") == \
        ["znver3", "haswell", "znver4", "emeraldrapids"]
    # AVX-512 here: closest Intel Xeon generation, then other vendors, the AVX2 client last
    assert order("emeraldrapids", "raptorlake", "x86-64-v4", "znver4", "skylake-avx512",
                 "sapphirerapids") == \
        ["sapphirerapids", "skylake-avx512", "znver4", "x86-64-v4", "raptorlake"]
    # same vendor, other family (Intel Core vs Xeon) before another vendor
    assert order("tigerlake", "znver4", "icelake-server") == ["icelake-server", "znver4"]
    # AVX vs AVX2 (same width) is nearer than SSE, and an unknown CPU comes last
    assert order("znver2", "mystery", "x86-64", "sandybridge") == ["sandybridge", "x86-64", "mystery"]


def test_ranking_ties_go_to_more_trials_then_the_name():
    a, b = Candidate("sapphirerapids", 100), Candidate("emeraldrapids", 500)
    assert order("graniterapids", a, b) == ["emeraldrapids", "sapphirerapids"]
    assert order("graniterapids", Candidate("sapphirerapids", 900), b) == \
        ["sapphirerapids", "emeraldrapids"]
    assert order("graniterapids", Candidate("sapphirerapids"), Candidate("emeraldrapids")) == \
        ["emeraldrapids", "sapphirerapids"]
    k = rank_key(cpu_traits("znver2"), cpu_traits("znver3"), 7)
    assert k == (0.0, 0, 1, -7, "znver3")


def test_ranking_takes_the_isa_from_the_cpu_flags():
    # a VM may hide AVX-512 from a Zen 4: then the AVX2 set is nearer than the AVX-512 one
    assert order("znver4", "znver5", "znver3") == ["znver5", "znver3"]
    assert order("znver4", "znver5", "znver3", isa="avx2") == ["znver3", "znver5"]
    # and a set's meta.json says what the CPU it was tuned on had
    assert order("znver2", Candidate("mystery", isa="avx2"), "znver4") == ["mystery", "znver4"]


def test_cross_architecture_sets_are_never_candidates():
    assert order("znver2", "cortex-a72", "sm_90", "neoverse-n1", "haswell") == ["haswell"]
    assert order("cortex-a76", "znver2", "neoverse-n1", "cortex-a72") == ["cortex-a72", "neoverse-n1"]
    assert why_near(cpu_traits("znver2", "avx2"), cpu_traits("emeraldrapids")) == \
        "AVX-512 vs AVX2 here, other vendor"
    assert why_near(cpu_traits("znver2"), cpu_traits("znver3")) == "same ISA (AVX2), same family"


# ------------------------------------------------------------------ choosing a set


def _host(cpu: str = "znver2", isa: str = "avx2"):
    """The host preset as it loads on a ``cpu`` machine (fixed, whatever runs the tests)."""
    p = get_target("host")
    return replace(p, target={**p.target, "mcpu": cpu},
                   detected={**p.detected, "llvm_cpu": cpu, "mcpu": cpu, "isa": isa})


def _set(root: Path, cpu: str, variant: str = "pruned-a8", target: str = "host", *, trials=10,
         meta_target=None, tail: str = "", meta_variant=None) -> Path:
    d = root / target / cpu / variant
    d.mkdir(parents=True)
    (d / S.DB_WORKLOAD).write_text(json.dumps(["1", "wl"]) + "\n")
    rec = [0, [[["trace"]], [1e-3], meta_target or {"kind": "llvm", "mcpu": cpu}, []]]
    (d / S.DB_RECORDS).write_text(json.dumps(rec) + "\n" + tail)
    S.write_meta(d, {"variant": meta_variant or variant, "trials": trials, "cpu": cpu,
                     "target": meta_target or {"kind": "llvm", "mcpu": cpu}})
    return d


def test_the_set_of_this_cpu_is_chosen_when_present(tmp_path):
    here = _host("znver2")
    own = _set(tmp_path, "znver2")
    _set(tmp_path, "znver3", trials=5000)
    _set(tmp_path, "emeraldrapids")
    choice = S.select_set(here, "pruned-a8", tmp_path)
    assert (choice.path, choice.cpu, choice.match, choice.note) == (own, "znver2", "exact", None)
    info = S.database_info(here, "pruned-a8", tmp_path)
    assert info["match"] == "exact" and info["path"] == str(own) and "note" not in info


def test_the_nearest_set_is_chosen_when_none_matches(tmp_path):
    here = _host("znver2")
    _set(tmp_path, "emeraldrapids", trials=1618)
    _set(tmp_path, "znver4")
    hw = _set(tmp_path, "haswell")
    _set(tmp_path, "cortex-a72", meta_target={"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                                               "mcpu": "cortex-a72"})
    _set(tmp_path, "znver2", variant="original")            # another variant's set: not this one
    choice = S.select_set(here, "pruned-a8", tmp_path)
    assert choice.path == hw and choice.match == "nearest"
    assert choice.ranked == ["haswell", "znver4", "emeraldrapids"]
    assert choice.note == "tuned on haswell, running on znver2"
    assert any(s.startswith("cortex-a72: tuned for another target") for s in choice.skipped)
    info = S.database_info(here, "pruned-a8", tmp_path)
    assert info["note"] == "tuned on haswell, running on znver2"
    assert info["why"] == "same ISA (AVX2), other vendor" and info["running_on"] == "znver2"


def test_no_usable_set(tmp_path):
    here = _host("znver2")
    _set(tmp_path, "cortex-a72", meta_target={"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                                               "mcpu": "cortex-a72"})
    old = tmp_path / "host" / "pruned-a8"                    # the layout before CPU sets
    old.mkdir(parents=True)
    (old / S.DB_RECORDS).write_text("")
    info = S.database_info(here, "pruned-a8", tmp_path)
    assert info.get("sha256") is None and info["path"] == str(tmp_path / "host/znver2/pruned-a8")
    assert "not usable: cortex-a72: tuned for another target" in info["reason"]
    assert f"the old-layout log {old} is ignored" in info["reason"]
    rows = S.list_schedules(tmp_path)
    assert [(r["cpu"], r.get("layout")) for r in rows] == [("cortex-a72", None), (None, "old")]
    assert "old layout: move it to host/<cpu>/pruned-a8/" in rows[1]["integrity"]
    # a CUDA set is not carried to another arch
    h100 = get_target("h100")
    _set(tmp_path, "sm_87", target="h100", meta_target={"kind": "cuda", "arch": "sm_87"})
    info = S.database_info(h100, "pruned-a8", tmp_path)
    assert info.get("sha256") is None and "not carried across archs" in info["reason"]


def test_the_nearest_set_is_still_refused_when_corrupt_or_of_another_variant(tmp_path):
    here = _host("znver2")
    _set(tmp_path, "znver3", tail='[0, [[["tr')
    with pytest.raises(TvmflowError, match="znver3/pruned-a8 is corrupt"):
        S.database_info(here, "pruned-a8", tmp_path)
    shutil.rmtree(tmp_path / "host")
    _set(tmp_path, "znver3", meta_variant="original")
    with pytest.raises(TvmflowError, match="tuned for variant 'original'"):
        S.database_info(here, "pruned-a8", tmp_path)


def test_adapt_source(tmp_path):
    here = _host("znver2")
    _set(tmp_path, "znver2")
    _set(tmp_path, "emeraldrapids")
    hw = _set(tmp_path, "haswell")
    assert S.adapt_source(here, "pruned-a8", True, tmp_path)[:2] == (hw, "haswell")
    assert S.adapt_source(here, "pruned-a8", "emeraldrapids", tmp_path)[1] == "emeraldrapids"
    with pytest.raises(TvmflowError, match="that is this CPU's own set"):
        S.adapt_source(here, "pruned-a8", "znver2", tmp_path)
    with pytest.raises(TvmflowError, match="no set of pruned-a8 tuned on nosuch"):
        S.adapt_source(here, "pruned-a8", "nosuch", tmp_path)
    with pytest.raises(TvmflowError, match="no set of original tuned on another CPU"):
        S.adapt_source(here, "original", True, tmp_path)
    with pytest.raises(TvmflowError, match="--adapt is for CPU targets"):
        S.adapt_source(get_target("h100"), "pruned-a8", "sm_87", tmp_path)


# ------------------------------------------------------------------ compile, end to end


def _cli(env, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "tvmflow", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_compile_applies_the_nearest_set_and_says_so(tmp_path):
    """The shipped set of another CPU: its records applied (every task), code for THIS CPU,
    the output right, the terminal and the sidecar naming both CPUs; then a set tuned on this
    CPU appears and the module is recompiled with it.  The variant is a copy of pruned-a8
    under another name (tvmflow ships no set of it, for any CPU), its set the shipped one."""
    here = get_target("host").cpu_key
    other = "emeraldrapids" if here != "emeraldrapids" else "sapphirerapids"
    root = tmp_path / "sched"
    models = tmp_path / "models"
    models.mkdir()
    (models / "a8copy.toml").write_text('name = "a8copy"\nbase = "pruned-a8"\n')
    shutil.copytree(SHIPPED / "pruned-a8", root / "host" / other / "a8copy")
    S.write_meta(root / "host" / other / "a8copy",
                 dict(S.read_meta(SHIPPED / "pruned-a8"), variant="a8copy"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TVMFLOW_")}
    env.update(TVMFLOW_SCHEDULES=str(root), TVMFLOW_ARTIFACTS_DIR=str(tmp_path / "arts"),
               TVMFLOW_MODEL_PATH=str(models), COLUMNS="250")
    r = _cli(env, "compile", "-t", "host", "-v", "a8copy")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"tuned on {other}, running on {here}" in r.stdout
    n = json.loads((SHIPPED / "pruned-a8" / "meta.json").read_text())["n_tasks"]
    assert f"tasks: {n}, tuned {n}, default schedules 0" in r.stdout
    so = tmp_path / "arts" / "host" / "a8copy.so"
    side = json.loads(so.with_suffix(".json").read_text())
    sched = side["schedules"]
    assert (sched["cpu"], sched["running_on"], sched["match"]) == (other, here, "nearest")
    assert sched["note"] == f"tuned on {other}, running on {here}"
    assert sched["path"] == str(root / "host" / other / "a8copy")
    assert side["coverage"]["tuned"] == side["coverage"]["tasks"] == n
    assert side["target"]["target"]["mcpu"] == here            # generated for this CPU
    from tvmflow.ir.frontend import import_model
    from tvmflow.runtime.run import run
    os.environ["TVMFLOW_MODEL_PATH"] = str(models)
    try:
        model = import_model("a8copy", seed=0)
        err = np.abs(run(so).output - model.reference(model.example_input())).max()
    finally:
        del os.environ["TVMFLOW_MODEL_PATH"]
    assert err <= 1e-4
    # tuned on this CPU now (here: the same records, copied): stale, recompiled, exact
    shutil.copytree(root / "host" / other / "a8copy", root / "host" / here / "a8copy")
    r = _cli(env, "compile", "-t", "host", "-v", "a8copy")
    assert r.returncode == 0, r.stderr[-3000:]
    sched = next(ln for ln in r.stdout.splitlines() if ln.startswith("schedules:"))
    assert "tuned on" not in sched and f"host/{here}/a8copy" in sched
    assert "compiled because:" in r.stdout and f"now the one tuned on {here}" in r.stdout
    sched = json.loads(so.with_suffix(".json").read_text())["schedules"]
    assert (sched["cpu"], sched["match"]) == (here, "exact") and "note" not in sched


# ------------------------------------------------------------------ run's check


def _pkg(mcpu: str, mattr=None):
    from tvmflow.artifact.package import Package
    from tvmflow.artifact.sidecar import Sidecar
    target = {"kind": "llvm", "mcpu": mcpu, **({"mattr": mattr} if mattr else {})}
    side = {"variant": {"name": "pruned"}, "input": {"seed": 0, "shape": [1, 3, 32, 32],
                                                     "dtype": "float32"},
            "target": {"name": "host", "device": "cpu", "target": target},
            "module": {"sha256": "x"}}
    return Package(Path("m.so"), Sidecar.from_json(side))


def test_run_refuses_a_module_for_a_cpu_with_extensions_this_one_lacks():
    from tvmflow.runtime.run import mismatches, missing_cpu_features
    flags = _cpu_flags()
    host = get_target("host")
    here = host.cpu_key
    # code for this CPU as the host preset builds it: LLVM's model of the CPU, less the
    # extensions this (virtual) CPU hides (mattr "-amx-tile", ...)
    assert mismatches(_pkg(here, host.target.get("mattr"))) == []
    assert mismatches(_pkg("x86-64")) == []
    richer = next((c for c in ("diamondrapids", "graniterapids", "sapphirerapids", "znver5",
                               "emeraldrapids") if missing_cpu_features(c, flags)), None)
    if richer is not None:
        (problem,) = mismatches(_pkg(richer))
        assert problem.startswith(f"it was built for {richer} and this CPU lacks ")
    if "avx512f" not in flags:
        (problem,) = mismatches(_pkg("x86-64-v4"))
        assert "lacks AVX-512 (avx512f" in problem
