"""Every option of every config group composes and builds, so no preset can rot unseen
(lightning-hydra-template's tests/test_configs.py, applied to each group)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import compose_train
from tests.matrices import options
from vtcc.build import build_loggers
from vtcc.errors import ConfigError
from vtcc.utils.loggers import missing_extra


@pytest.mark.parametrize("augment", options("augment"))
def test_every_augmentation_builds_and_makes_two_views(augment):
    data = "data=digits" if augment == "small" else "data=cifar10"
    # auto: decided from init_from's run
    flips = ["augment.view_b.hflip_p=0.5", "augment.view_b.base=null"] if augment == "selflabel" else []
    cfg = compose_train("x", [data, f"augment={augment}", "data.image_size=32", *flips], tiny=False)
    view_a, view_b = instantiate(cfg.augment)(torch.randint(0, 256, (4, cfg.data.in_chans, 32, 32)).byte())
    assert view_a.shape == view_b.shape == (4, cfg.data.in_chans, 32, 32)
    assert not torch.equal(view_a, view_b)


@pytest.mark.parametrize("callbacks", options("callbacks"))
@pytest.mark.parametrize("logger", options("logger"))
@pytest.mark.parametrize("strategy", options("strategy"))
def test_every_trainer_setup_builds(tmp_path, callbacks, logger, strategy):
    cfg = compose_train(
        tmp_path, [f"callbacks={callbacks}", f"logger={logger}", f"strategy={strategy}"], tiny=True
    )
    built = [instantiate(node) for node in (cfg.get("callbacks") or {}).values()]
    needs = [missing_extra(node._target_) for node in cfg.logger.values()]
    if any(needs):  # an optional extra that is not installed: one line naming the pip install
        with pytest.raises(ConfigError, match=rf"pip install 'vtcc\[{logger}\]'"):
            build_loggers(cfg.logger)
        return
    loggers = build_loggers(cfg.get("logger"))
    assert "csv" in cfg.logger  # every logger keeps the CSV log the report's curves read
    trainer_cfg = {**cfg.trainer, "devices": 1, "num_nodes": 1} if strategy != "single" else cfg.trainer
    trainer = instantiate(trainer_cfg, callbacks=built, logger=loggers or False)
    assert trainer.max_epochs == cfg.trainer.max_epochs
    if callbacks == "best_by_labels":  # supervised selection only by name
        assert any(getattr(c, "monitor", None) == "val/acc" for c in built)
    else:
        assert not any(getattr(c, "monitor", None) == "val/acc" for c in built)
