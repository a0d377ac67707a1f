"""The algorithms as strategies, and TrainConfig's compatibility with runs of earlier versions."""

from __future__ import annotations

import pytest
import torch

from leed_traffic.learn import ALGOS, TrainConfig, get_algorithm
from leed_traffic.learn.algos import ALGORITHMS
from leed_traffic.learn.config import NON_FINGERPRINT_FIELDS


def test_every_algo_name_has_a_strategy() -> None:
    assert tuple(ALGORITHMS) == ALGOS == ("leed", "ippo", "mappo", "bc", "reled")
    table = {n: (a.uses_demos, a.centralized_critic, a.ppo_term, a.masks_demos) for n, a in ALGORITHMS.items()}
    assert table == {"ippo": (False, False, True, False), "mappo": (False, True, True, False),
                     "bc": (True, False, False, False), "leed": (True, False, True, False),
                     "reled": (True, False, True, True)}
    with pytest.raises(ValueError, match="unknown algo"):
        get_algorithm("dqn")


def test_loss_combination() -> None:
    ppo, le, w = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([0.5, 0.0])
    assert torch.equal(get_algorithm("leed").combine(ppo, le, w), torch.tensor([2.5, 2.0]))
    assert torch.equal(get_algorithm("bc").combine(torch.zeros(2), le, w), torch.tensor([1.5, 0.0]))
    assert get_algorithm("bc").imitates(torch.zeros(2)) and not get_algorithm("ippo").imitates(torch.zeros(2))


def test_config_properties_follow_the_algorithm() -> None:
    assert TrainConfig(algo="mappo").use_centralized_critic and not TrainConfig(algo="ippo").use_centralized_critic
    assert TrainConfig(algo="ippo", centralized_critic=True).use_centralized_critic
    assert [TrainConfig(algo=a).uses_demos for a in ALGOS] == [True, False, False, True, True]
    with pytest.raises(ValueError, match="unknown algo"):
        TrainConfig(algo="dqn")


def test_legacy_config_dicts_load() -> None:
    old = {**TrainConfig().to_dict(), "eval_episodes": 5, "eval_seeds": [1000, 1001], "reled": True}
    assert TrainConfig.from_dict(old).algo == "reled"
    assert TrainConfig.from_dict({**old, "reled": False}).algo == "leed"
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"nonsense": 1})
    cfg = TrainConfig(algo="reled")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    fp = cfg.fingerprint_dict()
    assert fp["algo"] == "reled" and not {"reled", "eval_episodes", "eval_seeds"} & set(fp)
    assert not NON_FINGERPRINT_FIELDS & set(fp)
