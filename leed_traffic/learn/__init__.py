"""LEED policy optimization: decentralized PPO with a dynamically weighted expert loss.

Modules: ``config`` (TrainConfig), ``policy`` (actor-critics, controller), ``dtw`` (trajectory
distance), ``expert_weight`` (distance -> w_i, RELED), ``loss`` (PPO, expert, mix), ``buffer``
(GAE), ``rollout`` (workers), ``checkpoint`` (atomic, fingerprinted), ``trainer`` (the loop).
"""

from leed_traffic.learn.checkpoint import CheckpointCorrupt, CheckpointError, CheckpointMismatch
from leed_traffic.learn.config import ALGOS, TrainConfig
from leed_traffic.learn.policy import PolicyController
from leed_traffic.learn.rollout import EnvFactory
from leed_traffic.learn.trainer import load_policies, train

__all__ = [
    "ALGOS", "CheckpointCorrupt", "CheckpointError", "CheckpointMismatch", "EnvFactory",
    "PolicyController", "TrainConfig", "load_policies", "train",
]
