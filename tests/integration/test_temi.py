"""TEMI's loss pinned to the paper's equations, its EMA teachers, and a run on frozen features."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback

from tests.integration.test_pretrained import overrides, run, weights  # noqa: F401  (the fixture)
from vtcc.errors import ConfigError
from vtcc.losses import TemiLoss


def softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    e = np.exp(x / temperature - (x / temperature).max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def temi_by_hand(students, teachers, beta, temperature=0.1, momentum=0.9):
    """The paper's Eq. (weighted PMI with beta) for one head, written out loop by loop in numpy:
    prior pi = m / K + (1 - m) * mean teacher probability; w_i = sum_k p1_ik p2_ik;
    loss = mean over (v, w != v) of mean_i -w_i log sum_k (q_v,ik p_w,ik)^beta / pi_k."""
    q = [softmax(s, temperature) for s in students]
    p = [softmax(t, temperature) for t in teachers]
    k = q[0].shape[1]
    prior = momentum * np.full(k, 1 / k) + (1 - momentum) * np.concatenate(p).mean(axis=0)
    weight = (p[0] * p[1]).sum(axis=1)
    terms = []
    for v in range(2):
        for w in range(2):
            if v == w:
                continue
            values = []
            for i in range(len(weight)):
                inner = sum((q[v][i, c] * p[w][i, c]) ** beta / prior[c] for c in range(k))
                values.append(-weight[i] * math.log(inner))
            terms.append(np.mean(values))
    return np.mean(terms)


def test_temi_loss_matches_the_paper_written_out():
    rng = np.random.default_rng(0)
    students = [rng.normal(size=(5, 4)) * 0.3 for _ in range(2)]
    teachers = [rng.normal(size=(5, 4)) * 0.3 for _ in range(2)]
    loss = TemiLoss(num_clusters=4, num_heads=1, beta=0.6)
    value = loss([[torch.tensor(s) for s in students]], [[torch.tensor(t) for t in teachers]])
    assert value.shape == (1,)
    assert value.item() == pytest.approx(temi_by_hand(students, teachers, 0.6), rel=1e-5)


def test_temi_loss_of_uniform_predictions_is_its_closed_form():
    """Uniform q = p = 1/K and prior 1/K: sum_k (1/K^2)^beta * K = K^(2 - 2 beta), w = 1/K, so the
    loss is -(1/K) (2 - 2 beta) log K: -0.1 * 0.8 * log 10 = -0.18420681 for K = 10, beta = 0.6."""
    zeros = [[torch.zeros(3, 10), torch.zeros(3, 10)]]
    value = TemiLoss(num_clusters=10, beta=0.6)(zeros, zeros)
    assert value.item() == pytest.approx(-0.1 * 0.8 * math.log(10), rel=1e-6)


def test_several_heads_share_one_pair_weight_and_keep_their_own_prior():
    """The pair weight is averaged over the heads (TEMI's compute_weight); each head has its prior."""
    rng = np.random.default_rng(1)
    heads = [[rng.normal(size=(4, 3)) for _ in range(2)] for _ in range(2)]
    loss = TemiLoss(num_clusters=3, num_heads=2, beta=1.0)
    values = loss(*(2 * [[[torch.tensor(v) for v in views] for views in heads]]))
    p = [[softmax(v, 0.1) for v in views] for views in heads]
    weight = np.mean([(views[0] * views[1]).sum(axis=1) for views in p], axis=0)
    for head, views in enumerate(p):
        prior = 0.9 / 3 + 0.1 * np.concatenate(views).mean(axis=0)
        np.testing.assert_allclose(loss.prior[head].numpy(), prior, rtol=1e-6)
        inner = [((views[v] * views[1 - v]) / prior).sum(axis=1) for v in range(2)]
        expected = np.mean([np.mean(-weight * np.log(x)) for x in inner])
        assert values[head].item() == pytest.approx(expected, rel=1e-4)  # the loss runs in float32


@pytest.mark.parametrize("settings", [{"beta": 0.0}, {"beta": 1.5}, {"student_temperature": 0.0}])
def test_bad_temi_settings_are_refused(settings):
    with pytest.raises(ConfigError):
        TemiLoss(num_clusters=3, **settings)


def test_temi_trains_student_heads_and_moves_teachers_by_ema(tmp_path, weights):  # noqa: F811
    """A frozen-feature TEMI run: 3 heads, per-head losses logged, best head the lowest-loss one;
    after training the teachers (the network's heads) differ from the students and from their start."""
    _, checkpoint = run(
        tmp_path,
        weights,
        "objective=temi",
        "features.num_neighbors=5",
        "module.num_cluster_heads=3",
        "module.teacher_momentum=0.9",
    )
    state = checkpoint["state_dict"]
    assert checkpoint["vtcc_config"]["model"]["head_style"] == "temi"
    teacher = state["network.cluster_heads.0.mlp.0.weight"]
    student = state["student_heads.0.mlp.0.weight"]
    assert not torch.equal(teacher, student)
    assert state["temi_loss.prior"].shape == (3, 10)
    rows = (tmp_path / "logs" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    for name in ("train/head0_score", "train/head1_score", "train/head2_score", "train/best_head"):
        assert name in header
    last = [dict(zip(header, r.split(","), strict=True)) for r in rows[1:]]
    epoch_rows = [r for r in last if r["train/head0_score"]]
    losses = [float(epoch_rows[-1][f"train/head{i}_score"]) for i in range(3)]
    assert int(state["network.best_head"]) == int(np.argmin(losses))


def test_teacher_moves_towards_the_student_by_the_momentum(weights, tmp_path):  # noqa: F811
    from hydra.utils import instantiate

    from tests.conftest import compose_train
    from vtcc.config.recipe import take_recipe
    from vtcc.objectives import TemiClustering

    settings = overrides(weights, "objective=temi", "module.teacher_momentum=0.25", "num_clusters=10")
    cfg = compose_train(tmp_path, settings, tiny=False, resolve=False)
    take_recipe(cfg, TemiClustering)  # TEMI's heads, as the resolver takes them
    module = instantiate(cfg.module, network=instantiate(cfg.model))
    teacher = [p.clone() for p in module.network.cluster_heads.parameters()]
    with torch.no_grad():
        for p in module.student_heads.parameters():
            p.add_(1.0)
    module.on_train_batch_end(None, None, 0)
    for before, after, student in zip(
        teacher, module.network.cluster_heads.parameters(), module.student_heads.parameters(), strict=True
    ):
        torch.testing.assert_close(after, 0.25 * before + 0.75 * student)


def test_temi_resume_is_exact_and_eval_reproduces_its_metrics(tmp_path, weights):  # noqa: F811
    """ "whole" extracts the features, "first" finds them cached: the same run either way."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import assert_same_training_state, last_checkpoint
    from vtcc.evaluate import evaluate
    from vtcc.utils.cli import CONFIG_DIR

    temi = ["objective=temi", "features.num_neighbors=5", "module.num_cluster_heads=2"]
    run(tmp_path / "whole", weights, *temi, "trainer.max_epochs=2")
    run(tmp_path / "first", weights, *temi, "trainer.max_epochs=1")
    first = tmp_path / "first" / "checkpoints" / "last.ckpt"
    run(tmp_path / "second", weights, *temi, "trainer.max_epochs=2", f"ckpt_path={first}")
    assert_same_training_state(last_checkpoint(tmp_path / "whole"), last_checkpoint(tmp_path / "second"))
    ckpt = tmp_path / "whole" / "checkpoints" / "last.ckpt"
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "eval", [f"ckpt_path={ckpt}", "trainer.accelerator=cpu", f"paths.output_dir={tmp_path}/e"]
        )
    final = json.loads((tmp_path / "whole" / "final_metrics.json").read_text())
    assert evaluate(cfg)["acc"] == pytest.approx(final["acc"], abs=1e-9)


def test_temi_pairs_evaluation_features_of_an_image_and_a_nearest_neighbour(tmp_path, weights):  # noqa: F811
    """TEMI's precomputed mode: one evaluation-view embedding per image, no augmented views; each
    pair is an image's embedding and the embedding of one of its k nearest neighbours."""
    from tests.conftest import compose_train
    from vtcc.build import build_data, build_network, prepare_run
    from vtcc.losses import nearest_neighbors

    settings = overrides(weights, "objective=temi", "features.num_neighbors=3", "num_clusters=10")
    prepared = prepare_run(compose_train(tmp_path, settings, tiny=False), [])
    cfg, source = prepared.cfg, prepared.source  # the backbone's input size and statistics, as set in a run
    datamodule = build_data(cfg, build_network(cfg), source)
    features = datamodule.cache["eval"]
    assert datamodule.cache["views"].shape == (0, *features.shape)
    index = torch.arange(len(features))
    pair = datamodule.training_pairs((index,))
    anchor, partner = pair.first, pair.second
    torch.testing.assert_close(anchor, features)
    knn = nearest_neighbors(features, k=3)
    drawn = (partner[:, None, :] == features[knn]).all(dim=2)  # (N, 3): which neighbour was drawn
    assert drawn.any(dim=1).all()


def test_auto_teacher_momentum_keeps_the_recipes_share_of_the_run():
    """TEMI's recipe: momentum 0.996 (horizon 1 / 0.004 = 250 steps) over 4,800 steps. A run of
    350 steps gets a horizon of 350 * 250 / 4800 = 18.23 steps: m = 1 - 4800 / (350 * 250)."""
    from vtcc.objectives import auto_teacher_momentum

    assert auto_teacher_momentum(4800) == pytest.approx(0.996, abs=1e-12)
    assert auto_teacher_momentum(350) == pytest.approx(1 - 4800 / (350 * 250), abs=1e-12)
    assert auto_teacher_momentum(100_000) == 0.996  # never above the recipe's
    assert auto_teacher_momentum(10) == 0.0  # a horizon under one step: the teacher is the student


@pytest.mark.parametrize("momentum", ["1.5", "fast"])
def test_a_teacher_momentum_outside_zero_one_is_refused(weights, tmp_path, momentum):  # noqa: F811
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from tests.conftest import compose_train
    from vtcc.config.recipe import take_recipe
    from vtcc.objectives import TemiClustering

    settings = overrides(weights, "objective=temi", f"module.teacher_momentum={momentum}", "num_clusters=10")
    cfg = compose_train(tmp_path, settings, tiny=False, resolve=False)
    take_recipe(cfg, TemiClustering)  # TEMI's heads, as the resolver takes them
    with pytest.raises((ConfigError, InstantiationException), match="must be in \\[0, 1\\] .* or auto"):
        instantiate(cfg.module, network=instantiate(cfg.model))


def test_temi_presets_carry_the_official_settings(tmp_path):
    """TEMI's README command and main_args.py; SCAN's and self-labelling's configs (docs/fidelity.md)."""
    from tests.conftest import compose_train
    from vtcc.config.recipe import take_recipe
    from vtcc.models.heads import temi_head
    from vtcc.objectives import ScanClustering, TemiClustering

    temi = compose_train(tmp_path, ["model=pretrained", "objective=temi"], tiny=False, resolve=False)
    take_recipe(temi, TemiClustering)  # the class's recipe, as the resolver takes it
    assert temi.module.optimizer._target_ == "torch.optim.AdamW"
    assert (temi.module.optimizer.lr, temi.module.optimizer.weight_decay) == (1e-4, 1e-4)
    loss = temi.module.temi_loss
    assert (loss.beta, loss.student_temperature, loss.teacher_temperature) == (0.6, 0.1, 0.1)
    assert (temi.module.num_cluster_heads, temi.module.freeze_last_layer, temi.features.num_neighbors) == (
        16,
        1,
        50,
    )
    assert (temi.features.pairing, temi.model.head_style, temi.model.hidden_dim) == (
        "eval_neighbors",
        "temi",
        512,
    )
    head = temi_head(in_dim=384, hidden_dim=512, out_dim=10)
    linears = [m for m in head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(384, 512), (512, 256), (256, 10)]
    assert isinstance(head[1], torch.nn.GELU)
    norm = head[-1].parametrizations.weight.original0
    assert norm.requires_grad and torch.equal(norm, torch.ones(10, 1))
    for objective in ("scan", "selflabel"):
        cfg = compose_train(
            tmp_path, ["model=pretrained", f"objective={objective}"], tiny=False, resolve=False
        )
        assert cfg.module.optimizer._target_ == "torch.optim.Adam"
        assert (cfg.module.optimizer.lr, cfg.module.optimizer.weight_decay) == (1e-4, 1e-4)
    scan = compose_train(tmp_path, ["model=pretrained", "objective=scan"], tiny=False, resolve=False)
    take_recipe(scan, ScanClustering)
    assert (scan.module.scan_loss.entropy_weight, scan.features.num_neighbors) == (5.0, 20)


class ReplanAfterFirstEpoch(Callback):
    """What ``time_budget_minutes`` does after an epoch: a new ``max_epochs``."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 0:
            trainer.fit_loop.max_epochs = self.epochs


def test_auto_teacher_momentum_follows_a_replanned_run(tmp_path, weights, caplog):  # noqa: F811
    """256 images at batch 64 are 4 steps an epoch: 100 epochs plan 400 steps (m = 1 - 4800 /
    (400 * 250) = 0.952); re-planned to 2 epochs after the first, 8 steps (a horizon under one
    step: m = 0)."""
    replan = "+callbacks.replan={_target_:tests.integration.test_temi.ReplanAfterFirstEpoch,epochs:2}"
    with caplog.at_level(logging.INFO, logger="vtcc"):
        run(tmp_path, weights, "objective=temi", "features.num_neighbors=5", "trainer.max_epochs=100", replan)
    lines = [r.getMessage() for r in caplog.records if "teacher_momentum=auto" in r.getMessage()]
    assert lines[0].startswith("module.teacher_momentum=auto: 0.9520") and "400 steps" in lines[0]
    assert lines[1].startswith("module.teacher_momentum=auto: 0.0000") and "8 steps" in lines[1]
    assert len(lines) == 2
