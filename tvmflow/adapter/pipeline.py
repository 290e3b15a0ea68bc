"""The ONE Relax pipeline shared by ``tvmflow tune`` and ``tvmflow compile``.

Tuning records are keyed by the structural hash of each fused TIR function, so a record only
applies when compile produces exactly the functions that tuning extracted.  Both therefore go
through :func:`prepare`, and both use the same :class:`PipelineOptions` (stored in each
schedule log's ``meta.json`` under ``"pipeline"``; compile passes them back)::

    from tvmflow.adapter import pipeline
    opts = pipeline.PipelineOptions.from_json(info.get("pipeline"))   # info: load_for_compile
    executable, coverage = pipeline.build(model.mod, target, database, options=opts)

Stages (the order of ``static_shape_tuning_pipeline`` in ``tvm/relax/pipeline.py``):

* :func:`prepare` -- before task extraction: ``DecomposeOpsForInference`` (BatchNorm in
  inference form), optional ``ConvertLayout`` to NHWC, optional folding of BatchNorm into
  the conv weights (:mod:`.fold`), with ``layout="NCHWc"`` the blocked layout
  (:mod:`.nchwc`: channels zero-padded to the block, ``ConvertLayout`` to ``NCHW{b}c``,
  blocked conv legalization),
  ``LegalizeOps`` / ``FoldConstant`` / ``FuseOps`` / ``FuseTIR``, with
  ``conv_rule="fixed"`` the fixed NeoCPU-style schedule on the blocked convs
  (:mod:`.conv_rule`; those functions are then no tuning tasks), and with
  ``prepack`` ``AttachAttrLayoutFreeBuffers`` (weights are layout-free: a tuned schedule may
  rewrite their layout, the weight "prepack").
* :func:`extract_tasks` -- MetaSchedule's tasks of the prepared module (tuning, coverage).
* :func:`build` -- ``MetaScheduleApplyDatabase`` (tuned tasks), then with ``prepack``
  ``SplitLayoutRewritePreproc`` / ``LiftTransformParams`` / ``FoldConstant`` (the weights are
  constants, so the repacked weights fold at compile time and ``main`` does no layout
  transform at run time), then TVM's default lowering; tasks without a record keep the
  default (unscheduled) loop nest.  Returns the executable and a coverage dict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from tvmflow.errors import TvmflowError

LAYOUTS = ("NCHW", "NHWC", "NCHWc")
#: how the blocked convs of the NCHWc layout get their schedule: MetaSchedule's search, or the
#: fixed NeoCPU-style rule of :mod:`.conv_rule` (no tuning; the other kernels are searched)
CONV_RULES = ("search", "fixed")


@dataclass(frozen=True)
class PipelineOptions:
    """Choices that change the fused TIR functions (and so the tuning workloads)."""

    prepack: bool = True      # weight-layout rewrite (AttachAttrLayoutFreeBuffers)
    fold_bn: bool = True      # BatchNorm folded into the conv weights before fusion
    layout: str = "NCHW"      # data layout of conv2d (NHWC / NCHW{block}c via ConvertLayout)
    block: int = 0            # NCHWc channel block; 0 = the target's vector width
    pad_channels: bool = True  # NCHWc: zero-pad odd channel counts up to the block
    conv_rule: str = "search"  # NCHWc: blocked convs searched, or the fixed rule (CONV_RULES)
    blocked_stem: bool = False  # NCHWc: the first conv writes NCHWc itself (nchwc.stem_pass)
    blocked_shuffle: bool = False  # NCHWc: channel shuffles stay blocked (nchwc.shuffle_pass)

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise TvmflowError(f"unknown layout {self.layout!r}; choose one of {', '.join(LAYOUTS)}")
        if self.conv_rule not in CONV_RULES:
            raise TvmflowError(f"unknown conv rule {self.conv_rule!r}; choose one of "
                               f"{', '.join(CONV_RULES)}")
        if self.conv_rule != "search" and self.layout != "NCHWc":
            raise TvmflowError(f"the {self.conv_rule} conv rule needs layout NCHWc, "
                               f"not {self.layout}")
        if self.blocked_stem and self.layout != "NCHWc":
            raise TvmflowError(f"the blocked stem needs layout NCHWc, not {self.layout}")
        if self.blocked_shuffle and self.layout != "NCHWc":
            raise TvmflowError(f"the blocked shuffle needs layout NCHWc, not {self.layout}")
        if self.block < 0 or (self.block and self.layout != "NCHWc"):
            raise TvmflowError(f"block {self.block} needs layout NCHWc and a positive value")

    def resolved(self, target) -> "PipelineOptions":
        """The options with the NCHWc block fixed from ``target`` (what tuning records)."""
        if self.layout != "NCHWc" or self.block:
            return self
        from dataclasses import replace
        from tvmflow.adapter.nchwc import vector_block
        try:
            return replace(self, block=vector_block(_target(target)))
        except ValueError as exc:
            raise TvmflowError(str(exc)) from None

    @property
    def label(self) -> str:
        """Short description, e.g. ``NCHW8c, padded, BN folded, prepack``."""
        parts = [f"NCHW{self.block or ''}c" if self.layout == "NCHWc" else self.layout]
        if self.layout == "NCHWc":
            parts.append("padded" if self.pad_channels else "unpadded")
            parts.append("fixed conv rule" if self.conv_rule == "fixed" else "convs searched")
            if self.blocked_stem:
                parts.append("blocked stem")
            if self.blocked_shuffle:
                parts.append("blocked shuffle")
        parts.append("BN folded" if self.fold_bn else "BN unfolded")
        parts.append("prepack" if self.prepack else "no prepack")
        return ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "PipelineOptions":
        if not data:
            return cls()
        known = {k: data[k] for k in ("prepack", "fold_bn", "layout", "block", "pad_channels",
                                      "conv_rule", "blocked_stem", "blocked_shuffle")
                 if k in data}
        return cls(**known)


DEFAULT = PipelineOptions()
#: the layout a CPU (llvm) target gets when neither the user nor a tuning log chooses one and
#: no model is at hand to choose by (:func:`default_options`).
CPU_DEFAULT_LAYOUT = "NCHW"
#: the conv rule a new NCHWc build or tune gets unless one is named: the fixed rule, which ran
#: 1.21x as fast as MetaSchedule's search on the blocked convs (pruned-a8, emeraldrapids, 320
#: trials each; README, "Tuning").  A log's own rule always wins (``from_json``: a log written
#: before the option existed was searched).
NCHWC_DEFAULT_RULE = "fixed"


def nchwc_fits(target, mod) -> bool:
    """Whether ``mod`` runs NCHWc end to end on ``target``: an x86 target (AVX2 or AVX-512
    blocks), every conv blocked (the stem included) and the layout transformed only at the
    input and the output.  A model whose narrow group convs need NCHW in between (grouped)
    pays a transform at each of them and keeps NCHW, as it ran faster there (README, "The
    NCHWc layout")."""
    from tvmflow.adapter.nchwc import vector_block
    tgt = _target(target)
    if tgt.kind.name != "llvm" or vector_block(tgt) < 8:
        return False  # NEON (block 4): NCHWc is not measured on a board yet
    summary = layout_summary(mod, tgt, options_for(tgt, "NCHWc"))
    return "NCHW" not in summary["convs"] and summary["data_transforms"] <= 2


def default_options(target, mod=None) -> PipelineOptions:
    """The pipeline a new tune (and a compile without a log) uses for ``target``: on an x86
    CPU, NCHWc with the fixed conv rule when :func:`nchwc_fits` the model ``mod``, else
    :data:`CPU_DEFAULT_LAYOUT`; NCHW on other CPUs and on GPUs."""
    tgt = _target(target)
    if tgt.kind.name == "llvm":
        if mod is not None and nchwc_fits(tgt, mod):
            return options_for(tgt, "NCHWc")
        return PipelineOptions(layout=CPU_DEFAULT_LAYOUT).resolved(tgt)
    return PipelineOptions()


def options_for(target, layout: str | None = None, pad_channels: bool = True,
                conv_rule: str | None = None, mod=None) -> PipelineOptions:
    """``layout`` (None: the target's default for the model ``mod``) as resolved options for
    ``target``; ``conv_rule`` None keeps the default's (or "search")."""
    if layout is None:
        opts = default_options(target, mod)
        changes = {} if pad_channels else {"pad_channels": False}
        if conv_rule is not None:
            changes["conv_rule"] = conv_rule
        return PipelineOptions(**{**opts.to_json(), **changes}).resolved(target) \
            if changes else opts
    if conv_rule is None:
        conv_rule = NCHWC_DEFAULT_RULE if layout == "NCHWc" else "search"
    return PipelineOptions(layout=layout, pad_channels=pad_channels, conv_rule=conv_rule,
                           blocked_stem=layout == "NCHWc",
                           blocked_shuffle=layout == "NCHWc").resolved(target)


def _target(target):
    import tvm
    if isinstance(target, tvm.target.Target):
        return target
    if hasattr(target, "tvm_target"):  # a TargetPreset
        return target.tvm_target()
    from tvmflow.adapter.target import make_target
    return make_target(target)


def _graph_passes(target, options: PipelineOptions) -> list:
    """The graph-level passes, up to (not including) legalization."""
    from tvm import relax
    t = relax.transform
    passes = [t.DecomposeOpsForInference(), t.CanonicalizeBindings()]
    if options.layout == "NHWC":
        # pooling follows its input's layout
        passes.append(t.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]}))
    if options.fold_bn:
        from tvmflow.adapter.fold import fold_bn_pass
        passes.append(fold_bn_pass())
    if options.layout == "NCHWc":
        from tvmflow.adapter import nchwc
        block = options.resolved(target).block
        passes.append(t.FoldConstant())
        if options.pad_channels:
            passes.append(nchwc.pad_channels_pass(block))
        passes += [nchwc.convert_layout_pass(block), t.CanonicalizeBindings()]
        if options.blocked_stem:
            passes.append(nchwc.stem_pass(block))
        if options.blocked_shuffle:
            passes.append(nchwc.shuffle_pass(block))
    return passes


def _relax_passes(target, options: PipelineOptions) -> list:
    from tvm import relax
    from tvm.relax import pipeline as rp
    t = relax.transform
    passes = _graph_passes(target, options)
    legalize: dict | None = None
    if options.layout == "NCHWc":
        from tvmflow.adapter import nchwc
        legalize = nchwc.legalize_map()
    try:
        passes += rp.library_dispatch_passes(target)
    except ValueError:
        pass
    passes += [t.LegalizeOps(customize_legalize_map=legalize), t.AnnotateTIROpPattern(),
               t.FoldConstant(), t.FuseOps(), t.FuseTIR()]
    if options.conv_rule == "fixed":
        from tvmflow.adapter import conv_rule
        passes.append(conv_rule.apply_pass())
    if options.prepack:
        passes.append(t.AttachAttrLayoutFreeBuffers())
    return passes


def layout_summary(mod, target, options: PipelineOptions | None = None) -> dict[str, Any]:
    """The conv layouts and activation layout transforms after the graph passes (see
    :func:`.nchwc.layout_summary`)."""
    import tvm
    from tvmflow.adapter.nchwc import layout_summary as summary
    options = options or DEFAULT
    tgt = _target(target)
    # no FoldConstant: the weights' transforms (on constants) are not counted either way
    passes = _graph_passes(tgt, options)
    with tgt, tvm.transform.PassContext(opt_level=3):
        return summary(tvm.transform.Sequential(passes)(mod))


def prepare(mod, target, options: PipelineOptions | None = None):
    """The module tuning extracts tasks from and compile applies records to."""
    import tvm
    options = options or DEFAULT
    tgt = _target(target)
    with tgt, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(_relax_passes(tgt, options))(mod)


def extract_tasks(mod, target, options: PipelineOptions | None = None, *, prepared: bool = False):
    """MetaSchedule's ExtractedTasks of the (prepared) module, in extraction order, without
    the functions a fixed rule already scheduled (:mod:`.conv_rule`)."""
    from tvm.s_tir import meta_schedule as ms
    tgt = _target(target)
    if not prepared:
        mod = prepare(mod, tgt, options)
    return [t for t in ms.relax_integration.extract_tasks(mod, tgt) if not _scheduled(t)]


def _scheduled(task) -> bool:
    func = task.dispatched[0]["main"]
    return bool(func.attrs is not None and func.attrs.get("tirx.is_scheduled", False))


def fixed_functions(mod) -> list[str]:
    """The PrimFuncs of a prepared module that a fixed rule scheduled (not tuning tasks)."""
    from tvmflow.adapter.conv_rule import fixed_functions as fixed
    return fixed(mod)


def coverage(tasks, target, database) -> dict[str, Any]:
    """Which tasks the database has a tuning record for."""
    tgt = _target(target)
    names, tuned = [], []
    for task in tasks:
        names.append(task.task_name)
        rec = None
        if database is not None:
            rec = database.query_tuning_record(task.dispatched[0], tgt, task.task_name)
        if rec is not None:
            tuned.append(task.task_name)
    return {"tasks": len(names), "tuned": len(tuned), "default": len(names) - len(tuned),
            "task_names": names, "tuned_names": tuned, "fixed": []}


def build(mod, target, database=None, *, options: PipelineOptions | None = None,
          prepared: bool = False, cuda_graph: bool = False):
    """Compile ``mod`` (the imported Relax module) with the records in ``database``.

    Returns ``(executable, coverage)``; coverage = ``{"tasks", "tuned", "default",
    "task_names", "tuned_names", "fixed"}`` (``fixed``: the functions a fixed rule scheduled,
    which are not tasks).  ``database`` is a MetaSchedule Database or None.

    For CUDA the kernels stay CUDA source here, also where a CUDA driver is present
    (:func:`.cuda.nvcc_build`): compile turns them into one nvcc cubin when it exports the
    library.  ``cuda_graph``: Relax captures the model's kernel launches into a CUDA graph at
    the first run and replays it after (``relax.backend.use_cuda_graph``).
    """
    import tvm
    from tvm import relax
    options = options or DEFAULT
    tgt = _target(target)
    if not prepared:
        mod = prepare(mod, tgt, options)
    tasks = extract_tasks(mod, tgt, prepared=True)
    cov = coverage(tasks, tgt, database)
    cov["fixed"] = fixed_functions(mod)
    if database is not None and cov["tuned"]:
        # MetaScheduleApplyDatabase reads Target.current() when it is constructed: build the
        # passes inside the target context
        with tgt, database, tvm.transform.PassContext(opt_level=3):
            after = [relax.transform.MetaScheduleApplyDatabase(enable_warning=False)]
            if options.prepack:
                after += [relax.transform.SplitLayoutRewritePreproc(),
                          relax.transform.LiftTransformParams(), relax.transform.FoldConstant()]
            mod = tvm.transform.Sequential(after)(mod)
    if cuda_graph and tgt.kind.name != "cuda":
        raise TvmflowError(f"CUDA graphs need a CUDA target, not {tgt.kind.name}")
    config = {"relax.backend.use_cuda_graph": True} if cuda_graph else {}
    from tvmflow.adapter.cuda import nvcc_build
    with nvcc_build(tgt), tvm.transform.PassContext(opt_level=3, config=config):
        executable = tvm.compile(mod, target=tgt)
    return executable, cov
