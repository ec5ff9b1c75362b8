"""studies/profile/profile_step.py: a profiled step's op events sorted into kinds."""

import profile_step


def test_op_events_are_told_from_the_profilers_own_and_sorted_into_kinds():
    assert profile_step.op_type("sequential/conv2d/Conv2D:_MklNativeConv2D") == "_MklNativeConv2D"
    for container in ("ExecutorState::Process", "FunctionRun:Run", "call: __inference_step_12", "Iterator::Map"):
        assert profile_step.op_type(container) is None, container
    kinds = {"_MklNativeConv2DBackpropFilter": "convolution", "_MklNativeMaxPoolGrad": "pooling", "Cast": "cast",
             "FusedBatchNormGradV3": "batchnorm", "TanhGrad": "elementwise", "Mul": "elementwise",
             "ResourceApplyKerasMomentum": "optimizer", "AssignVariableOp": "optimizer", "Sum": "reduction",
             "IteratorGetNext": "input", "Transpose": "other"}
    assert {op: profile_step.kind_of(op) for op in kinds} == kinds


def test_the_summary_gives_each_kinds_time_per_step_and_share():
    totals = {"_MklNativeConv2D": 3000.0, "Mul": 1000.0, "Cast": 1000.0}  # microseconds over 2 steps
    summary = profile_step.summarise(__import__("collections").Counter(totals), 2)
    assert summary["kinds"]["convolution"] == {"ms_per_step": 1.5, "share": 0.6}
    assert summary["kinds"]["cast"]["share"] == 0.2 and summary["op_ms_per_step"] == 2.5
