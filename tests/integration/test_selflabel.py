"""Self-labelling (SCAN's third step) from a finished run: the loss, the strong view, init_from,
eval / predict / resume on its checkpoints, and the bad-input lines."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from tests.conftest import assert_same_training_state, compose_train, last_checkpoint
from tests.integration.test_pretrained import run, weights  # noqa: F401  (the fixture)
from vtcc.config.init_from import load_run_weights, take_run_settings
from vtcc.data import strong_view
from vtcc.data.feature_cache import CachedFeatureDataModule
from vtcc.data.pairings import pairing_for
from vtcc.errors import ConfigError
from vtcc.evaluate import evaluate
from vtcc.losses import ConfidenceCrossEntropy
from vtcc.objectives.selflabel import lower_threshold
from vtcc.train import train
from vtcc.utils.cli import CONFIG_DIR, run_safely

SELFLABEL = ["objective=selflabel", "module.selflabel_loss.threshold=0.5"]


def test_confident_cross_entropy_matches_scans_balanced_loss_by_hand():
    """Rows 0, 1, 3 are confident (>= 0.9; row 3 exactly at it), labels 0, 0, 2: weights n / n_c =
    3/2, 3/2, 3; the mean is weighted: sum w_i ce_i / sum w_i (F.cross_entropy with weight)."""
    p_weak = torch.tensor([[0.95, 0.03, 0.02], [0.92, 0.05, 0.03], [0.5, 0.3, 0.2], [0.05, 0.05, 0.9]])
    logits = torch.tensor([[2.0, 0.0, 1.0], [0.5, 1.5, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.3]])

    def ce(row: list[float], label: int) -> float:
        return -row[label] + math.log(sum(math.exp(v) for v in row))

    balance, terms = [1.5, 1.5, 3.0], [ce([2.0, 0.0, 1.0], 0), ce([0.5, 1.5, 0.0], 0), ce([1.0, 0.0, 0.3], 2)]
    expected = sum(w * t for w, t in zip(balance, terms, strict=True)) / sum(balance)
    loss, confident = ConfidenceCrossEntropy(threshold=0.9)(p_weak, logits)
    assert confident.tolist() == [True, True, False, True]
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    unbalanced, _ = ConfidenceCrossEntropy(threshold=0.9, balance=False)(p_weak, logits)
    assert unbalanced.item() == pytest.approx(sum(terms) / 3, rel=1e-6)


def test_no_confident_image_gives_a_zero_loss_that_still_backpropagates():
    logits = torch.zeros(4, 3, requires_grad=True)
    loss, confident = ConfidenceCrossEntropy(threshold=0.99)(torch.full((4, 3), 1 / 3), logits)
    assert not confident.any() and loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(4, 3))


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5])
def test_a_threshold_outside_zero_one_is_refused(threshold):
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\]"):
        ConfidenceCrossEntropy(threshold=threshold)


def test_strong_view_draws_its_ops_per_image_and_cuts_out_a_square():
    torch.manual_seed(0)
    images = torch.rand(1, 3, 16, 16).expand(64, -1, -1, -1).contiguous()
    view = strong_view(16, [0.5] * 3, [0.25] * 3, hflip_p=0.0, cutout_scale=(0.25, 0.25))
    out = view(images)
    assert out.shape == (64, 3, 16, 16)
    distinct = {tuple(x.flatten()[:50].tolist()) for x in out}
    assert len(distinct) > 32  # kornia's RandAugment would give one set of ops to the whole batch
    zeros = (out == 0).all(dim=1).flatten(1).sum(dim=1)  # Cutout: a square of 0 after normalising
    assert (zeros >= 64).all()  # a quarter of the 256 pixels, kornia keeps the square inside


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A finished 2-epoch contrastive run with two cluster heads."""
    run = tmp_path_factory.mktemp("base") / "run"
    train(compose_train(run, ["module.num_cluster_heads=2", "trainer.max_epochs=3"]))
    return run


def selflabel(output: Path, base: Path, *extra: str) -> dict[str, float]:
    ckpt = base / "checkpoints" / "last.ckpt"
    return train(compose_train(output, [*SELFLABEL, f"init_from={ckpt}", *extra], resolve=False))


def test_selflabel_starts_from_the_runs_best_head_and_trains_a_new_run(base_run, tmp_path):
    base = last_checkpoint(base_run)
    best = int(base["state_dict"]["network.best_head"])
    cfg = compose_train(
        tmp_path / "s", [*SELFLABEL, f"init_from={base_run}/checkpoints/last.ckpt"], resolve=False
    )
    from hydra.utils import instantiate

    checkpoint = take_run_settings(cfg, overrides=[])
    assert cfg.num_clusters == 10 and cfg.data.image_size == 8 and cfg.model.embed_dim == 32
    assert cfg.augment.view_b.hflip_p == 0.0  # digits trained without flips
    module = instantiate(cfg.module, network=instantiate(cfg.model))
    load_run_weights(module, checkpoint, "base")
    state = module.network.state_dict()
    assert module.network.num_cluster_heads == 1 and int(state["best_head"]) == 0
    for key, value in state.items():
        source = key.replace("cluster_heads.0.", f"cluster_heads.{best}.")
        if key != "best_head":
            assert torch.equal(value, base["state_dict"][f"network.{source}"]), key

    metrics = selflabel(tmp_path / "run", base_run)
    stored = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert stored["acc"] == pytest.approx(metrics["acc"])
    new = last_checkpoint(tmp_path / "run")
    assert new["epoch"] == 1 and new["vtcc_config"]["init_from"].endswith("last.ckpt")
    with open(tmp_path / "run" / "logs" / "metrics.csv") as handle:
        header = handle.readline()
    assert "train/confident_fraction" in header


def test_eval_predict_and_resume_work_on_a_selflabel_run(base_run, tmp_path, predict_in_process):
    selflabel(tmp_path / "whole", base_run, "trainer.max_epochs=2")
    selflabel(tmp_path / "first", base_run, "trainer.max_epochs=1")
    selflabel(
        tmp_path / "second",
        base_run,
        "trainer.max_epochs=2",
        f"ckpt_path={tmp_path / 'first/checkpoints/last.ckpt'}",
    )
    assert_same_training_state(last_checkpoint(tmp_path / "whole"), last_checkpoint(tmp_path / "second"))

    ckpt = tmp_path / "whole" / "checkpoints" / "last.ckpt"
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "eval", [f"ckpt_path={ckpt}", "trainer.accelerator=cpu", f"paths.output_dir={tmp_path / 'eval'}"]
        )
    metrics = evaluate(cfg)
    final = json.loads((tmp_path / "whole" / "final_metrics.json").read_text())
    assert metrics["acc"] == pytest.approx(final["acc"], abs=1e-9)

    images = tmp_path / "new_images"
    images.mkdir()
    for i in range(3):
        Image.new("L", (8, 8), color=40 * i).save(images / f"{i}.png")
    code, err = predict_in_process(tmp_path, f"ckpt_path={ckpt}", f"input={images}", "output=predicted")
    assert code == 0, err
    rows = (tmp_path / "predicted" / "clusters.csv").read_text().splitlines()
    assert rows[0] == "path,cluster,confidence" and len(rows) == 4


def test_no_confident_image_stops_with_the_fix(base_run, tmp_path, capsys):
    ckpt = base_run / "checkpoints" / "last.ckpt"
    cfg = compose_train(
        tmp_path / "run",
        ["objective=selflabel", f"init_from={ckpt}", "module.selflabel_loss.threshold=1.0"],
        resolve=False,
    )
    with pytest.raises(SystemExit) as stopped:
        run_safely(train, cfg)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        "no image reached the confidence threshold 1 in epoch 0" in err
        and "Lower module.selflabel_loss.threshold (e.g. 0.9)" in err
    )


@pytest.mark.parametrize(
    ("failed", "suggested"),
    [(1.0, 0.9), (0.99, 0.9), (0.9, 0.81), (0.5, 0.45), (0.03, 0.027), (0.001, 0.0009)],
)
def test_the_fix_names_a_threshold_below_the_one_that_failed(failed, suggested):
    """The message once told a run that failed at 0.9 to lower the threshold to 0.9."""
    assert lower_threshold(failed) == suggested < failed and suggested > 0


def test_a_flat_head_neither_clusters_nor_stops_a_run_whose_other_head_trains(tmp_path, weights):  # noqa: F811
    """The reported bug, from a 2-head frozen-feature SCAN run. Head 0 is made flat (its last layer
    zeroed: p = 1/10 < 0.2 for every image, loss exactly 0), head 1 is the run's best head, best
    when the epoch starts. Ranked by loss, the flat head won epoch 0; epoch 1 counted only its
    images and stopped the run. Scores: the flat head's is the cross-entropy of uniform predictions,
    log 10 (entropy term 0). On the evaluation features weak = strong, so any other head scores at
    most log 10 - I (I its mutual information of image and cluster), below log 10."""
    _, scan = run(
        tmp_path / "scan", weights, "objective=scan", "features.num_neighbors=5", "module.num_cluster_heads=2"
    )
    state = scan["state_dict"]
    sharp = f"network.cluster_heads.{int(state['network.best_head'])}."
    for key in [k for k in state if k.startswith(sharp)]:
        state["network.cluster_heads.1." + key.removeprefix(sharp)] = state[key].clone()
    last = max(int(k.split(".")[4]) for k in state if k.startswith("network.cluster_heads.0.mlp."))
    for name in ("weight", "bias"):
        state[f"network.cluster_heads.0.mlp.{last}.{name}"].zero_()
    state["network.best_head"] = torch.tensor(1)
    torch.save(scan, tmp_path / "flat.ckpt")

    overrides = [
        *SELFLABEL,
        f"init_from={tmp_path / 'flat.ckpt'}",
        "module.num_cluster_heads=2",
        "module.selflabel_loss.threshold=0.2",
        f"features.cache_dir={tmp_path / 'cache'}",
        "trainer.max_epochs=2",
    ]
    train(compose_train(tmp_path / "run", overrides, tiny=False, resolve=False))
    new = last_checkpoint(tmp_path / "run")
    assert new["epoch"] == 1 and int(new["state_dict"]["network.best_head"]) == 1
    with open(tmp_path / "run" / "logs" / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row["train/head0_score"]]
    assert len(rows) == 2
    for row in rows:
        assert float(row["train/head0_score"]) == pytest.approx(math.log(10), rel=1e-5)
        assert float(row["train/head1_score"]) < math.log(10)
        assert 0 < float(row["train/confident_fraction"]) <= 0.5  # head 0 labels nothing


def test_init_from_of_another_model_or_k_is_refused(base_run, tmp_path):
    ckpt = base_run / "checkpoints" / "last.ckpt"
    cfg = compose_train(tmp_path / "k", [*SELFLABEL, f"init_from={ckpt}", "num_clusters=5"], resolve=False)
    with pytest.raises(ConfigError, match="clusters into K=10, not num_clusters=5"):
        take_run_settings(cfg, overrides=["num_clusters=5"])
    cfg = compose_train(
        tmp_path / "m", [*SELFLABEL, f"init_from={ckpt}", "model.embed_dim=64"], resolve=False
    )
    with pytest.raises(ConfigError, match="has another model .*embed_dim: 32 -> 64"):
        take_run_settings(cfg, overrides=["model.embed_dim=64"])
    cfg = compose_train(tmp_path / "h", ["module.num_cluster_heads=3", f"init_from={ckpt}"], resolve=False)
    checkpoint = take_run_settings(cfg, overrides=[])
    from hydra.utils import instantiate

    module = instantiate(cfg.module, network=instantiate(cfg.model))
    with pytest.raises(ConfigError, match="has 2 cluster heads and this run trains 3"):
        load_run_weights(module, checkpoint, str(ckpt))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["objective=selflabel"], "objective=selflabel starts from a trained run: add init_from="),
        (["objective=selflabel", "init_from=missing.ckpt"], "init_from=missing.ckpt does not exist"),
        (["objective=selflabel", "init_from=not_a_run.ckpt"], "is not a vtcc checkpoint"),
        (["module.num_cluster_heads=0"], "module.num_cluster_heads=0 must be an integer >= 1"),
    ],
)
def test_bad_selflabel_input_is_one_line_and_exit_2(tmp_path, train_in_process, extra, message):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "not_a_run.ckpt")
    code, err = train_in_process(*extra)
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_selflabel_on_frozen_features_trains_on_the_evaluation_features(tmp_path, weights):  # noqa: F811
    """From a frozen-feature SCAN run. By default (pairing=eval) both members of a pair are the
    image's evaluation features and no augmented view is extracted; with pairing=weak_strong the
    cached first view of every pass is exactly the evaluation view (weak), the second a strong view.
    Either way the heads train."""
    _, scan = run(tmp_path / "scan", weights, "objective=scan", "features.num_neighbors=5")
    ckpt = tmp_path / "scan" / "checkpoints" / "last.ckpt"
    cache_dir = tmp_path / "cache"

    def selflabel(name: str, *extra: str) -> dict[str, torch.Tensor]:
        cfg = compose_train(
            tmp_path / name,
            [
                *SELFLABEL,
                f"init_from={ckpt}",
                "module.selflabel_loss.threshold=0.2",
                f"features.cache_dir={cache_dir}",
                "trainer.max_epochs=1",
                *extra,
            ],
            tiny=False,
            resolve=False,
        )
        train(cfg)
        state = last_checkpoint(tmp_path / name)["state_dict"]
        assert not torch.equal(
            state["network.cluster_heads.0.mlp.0.weight"],
            scan["state_dict"]["network.cluster_heads.0.mlp.0.weight"],
        )
        newest = max(cache_dir.glob("*.pt"), key=lambda p: p.stat().st_mtime)
        return torch.load(newest, weights_only=True)

    cache = selflabel("sl_eval")
    assert cache["views"].shape == (0, *cache["eval"].shape)
    datamodule = CachedFeatureDataModule.__new__(CachedFeatureDataModule)
    datamodule.pairing, datamodule.cache = pairing_for("eval"), cache
    pair = datamodule.training_pairs((torch.tensor([3, 0, 7]),))
    weak, strong = pair.first, pair.second
    torch.testing.assert_close(weak, cache["eval"][[3, 0, 7]])
    torch.testing.assert_close(strong, cache["eval"][[3, 0, 7]])

    cache = selflabel("sl_strong", "features.pairing=weak_strong", "features.num_views=4")
    assert cache["views"].shape[0] == 4
    torch.testing.assert_close(cache["views"][0], cache["eval"])
    torch.testing.assert_close(cache["views"][2], cache["eval"])
    assert not torch.allclose(cache["views"][1], cache["eval"])


def test_auto_settings_follow_the_run_it_starts_from(base_run, tmp_path):
    """A contrastive digits run: threshold 0.9, strong view = its small-image recipe under Cutout,
    no flips. A SCAN run with a colour recipe: SCAN's 0.99, SCAN's ops and flips."""
    ckpt = base_run / "checkpoints" / "last.ckpt"
    cfg = compose_train(tmp_path / "a", ["objective=selflabel", f"init_from={ckpt}"], resolve=False)
    take_run_settings(cfg, overrides=[])
    assert cfg.module.selflabel_loss.threshold == 0.9
    assert cfg.augment.view_b.base._target_ == "vtcc.data.small_image_view"
    assert cfg.augment.view_b.hflip_p == 0.0
    stored = torch.load(ckpt, weights_only=True)
    module = stored["vtcc_config"]["module"]  # as a SCAN run stores its objective
    for key in ("instance_loss", "cluster_loss", "instance_weight", "cluster_weight"):
        del module[key]
    module.update(_target_="vtcc.module.ScanClustering", scan_loss={"_target_": "vtcc.losses.ScanLoss"})
    stored["vtcc_config"]["augment"] = {"view_a": {"_target_": "vtcc.data.rgb_view", "hflip_p": 0.5}}
    torch.save(stored, tmp_path / "scan.ckpt")
    cfg = compose_train(
        tmp_path / "b", ["objective=selflabel", f"init_from={tmp_path / 'scan.ckpt'}"], resolve=False
    )
    take_run_settings(cfg, overrides=[])
    assert cfg.module.selflabel_loss.threshold == 0.99
    assert cfg.augment.view_b.base is None and cfg.augment.view_b.hflip_p == 0.5
