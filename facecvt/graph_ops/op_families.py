"""The op families the passes reason about: one table, so every pass agrees on what an op is."""

from __future__ import annotations

# ops that forward their (single) input unchanged; IdentityN forwards each input to its own output
PASS_THROUGH = frozenset({"Identity", "StopGradient", "CheckNumerics", "Snapshot", "PreventGradient",
                          "IdentityN", "EnsureShape"})
PLACEHOLDERS = frozenset({"Placeholder", "PlaceholderWithDefault", "PlaceholderV2"})
VARIABLES = frozenset({"VariableV2", "VarHandleOp", "ReadVariableOp"})
STATE_UPDATES = frozenset({"Assign", "AssignSub", "AssignAdd"})

# control flow: v1 conds, v2 (functional) conds, function calls, v1 loops
SWITCHES = frozenset({"Switch", "RefSwitch"})
MERGES = frozenset({"Merge", "RefMerge"})
FUNCTIONAL_CONDS = frozenset({"If", "StatelessIf"})
FUNCTION_CALLS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
LOOPS = frozenset({"Enter", "RefEnter", "Exit", "RefExit", "NextIteration", "LoopCond", "While", "StatelessWhile"})

RANDOM = frozenset({"RandomUniform", "RandomStandardNormal", "TruncatedNormal", "RandomUniformInt", "Multinomial",
                    "RandomShuffle"})
QUEUES = frozenset({"FIFOQueueV2", "QueueDequeueUpToV2", "QueueDequeueManyV2", "QueueDequeueV2"})
SIDE_EFFECTS = frozenset({"NoOp", "Assert", "Print", "PrintV2", "PyFunc", "PyFuncStateless", "EagerPyFunc",
                          "ControlTrigger"})

FUSED_BATCH_NORMS = frozenset({"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"})
# ops with a weight tensor whose output channels a per-channel scale can be folded into
WEIGHTED = frozenset({"Conv2D", "DepthwiseConv2dNative", "MatMul"})
# binary ops whose operands may be swapped (the matcher tries both orders)
COMMUTATIVE = frozenset({"Add", "AddV2", "Mul", "Maximum", "Minimum"})

# what a clean inference graph must not contain
TRAINING_OPS = (SWITCHES | MERGES | FUNCTIONAL_CONDS | FUNCTION_CALLS | FUSED_BATCH_NORMS | STATE_UPDATES
                | RANDOM | QUEUES | (VARIABLES - {"ReadVariableOp"}))
# ops whose value may change from run to run, or that carry control flow or state: never folded
NOT_FOLDABLE = (PLACEHOLDERS | VARIABLES | STATE_UPDATES | SWITCHES | MERGES | FUNCTIONAL_CONDS | FUNCTION_CALLS
                | LOOPS | RANDOM | QUEUES | SIDE_EFFECTS)
