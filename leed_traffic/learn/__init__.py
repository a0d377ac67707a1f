"""LEED policy optimization: decentralized PPO with a dynamically weighted expert loss.

Modules: ``config`` (TrainConfig), ``algos`` (ippo, mappo, bc, leed, reled as strategies),
``trainer`` (the loop), ``policy`` (actor-critics), ``buffer`` (GAE), ``loss`` (PPO, expert, mix),
``dtw`` (trajectory distance), ``expert_weight`` (distance -> w_i, RELED), ``demo_batch``
(demonstrations as tensors, BC warm start), ``episodes`` (per-worker episodes, reward
normalisation, resume replay), ``rollout`` (workers), ``runlog`` (CSV logs, progress),
``checkpoint`` (atomic, fingerprinted), ``serving`` (a run's policy as a controller).
"""

from leed_traffic.learn.algos import get_algorithm
from leed_traffic.learn.checkpoint import CheckpointCorrupt, CheckpointError, CheckpointMismatch
from leed_traffic.learn.config import ALGOS, TrainConfig
from leed_traffic.learn.rollout import EnvFactory, EnvSpec
from leed_traffic.learn.serving import PolicyController, final_env_steps, load_policies, load_trained
from leed_traffic.learn.trainer import TrainResult, train

__all__ = [
    "ALGOS", "CheckpointCorrupt", "CheckpointError", "CheckpointMismatch", "EnvFactory", "EnvSpec",
    "PolicyController", "TrainConfig", "TrainResult", "final_env_steps", "get_algorithm",
    "load_policies", "load_trained", "train",
]
