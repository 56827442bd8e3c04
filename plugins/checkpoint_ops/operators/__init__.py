from checkpoint_ops.operators.base import CheckpointOpsOperator
from checkpoint_ops.operators.setup import CheckpointSetupOperator

__all__ = ["CheckpointOpsOperator", "CheckpointSetupOperator"]
