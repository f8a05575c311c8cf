"""Several cluster heads side by side, ranked by their scores (never labels), and SCAN's linear head."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from hydra.utils import instantiate
from torch import nn

from tests.conftest import compose_train, last_checkpoint
from tests.integration.test_pretrained import run, weights  # noqa: F401  (the fixture)
from vtcc.data import load_digits
from vtcc.models.network import ClusteringNetwork
from vtcc.train import train


class Flat(nn.Module):
    num_features = 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_the_lowest_mean_score_chooses_the_head_and_evaluation_uses_it(tiny_cfg):
    module = instantiate(tiny_cfg.module, network=instantiate(tiny_cfg.model), num_cluster_heads=3)
    module._trainer = SimpleNamespace(strategy=SimpleNamespace(reduce=lambda t, reduce_op: t))
    module.on_train_epoch_start()
    for scores in ([3.0, 1.0, 2.5], [3.0, 2.0, 0.4]):  # means 3.0, 1.5, 1.45: head 2
        module._track_head_scores(torch.tensor(scores))
    module._choose_best_head()
    assert int(module.network.best_head) == 2
    images = torch.rand(4, 1, 8, 8)
    module.network.eval()
    features = module.network.backbone(images)
    expected = module.network.cluster_heads[2](features)
    torch.testing.assert_close(module.network.cluster_probabilities(images), expected)
    _, p = module.network.embed_and_assign(images)
    torch.testing.assert_close(p, expected)


def test_a_checkpoint_from_before_several_heads_loads_as_head_zero():
    network = ClusteringNetwork(Flat(), num_clusters=3, hidden_dim=4, head_style="cc")
    old = {k.replace("cluster_heads.0.", "cluster_projector."): v for k, v in network.state_dict().items()}
    del old["best_head"]
    fresh = ClusteringNetwork(Flat(), num_clusters=3, hidden_dim=4, head_style="cc")
    fresh.load_state_dict(old)
    for key, value in network.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_the_linear_head_is_one_linear_layer():
    network = ClusteringNetwork(Flat(), num_clusters=5, head_style="linear")
    layers = list(network.cluster_projector.mlp)
    assert len(layers) == 1 and isinstance(layers[0], nn.Linear)
    assert layers[0].in_features == 6 and layers[0].out_features == 5


def test_labels_never_choose_the_head(tmp_path):
    """The same images with shuffled labels train to the same weights and the same best head."""
    arrays = load_digits()
    images = arrays.images[:512, 0].numpy()
    labels = arrays.labels[:512].numpy()
    shuffled = np.random.default_rng(0).permutation(labels)
    for name, y in (("true", labels), ("shuffled", shuffled)):
        np.savez(tmp_path / f"{name}.npz", x=images, y=y)
        settings = [
            "data=npz",
            f"data.root={tmp_path / name}.npz",
            "data.in_chans=1",
            "data.mean=[0.3]",
            "data.std=[0.4]",
            "module.num_cluster_heads=3",
            "trainer.max_epochs=3",
        ]
        train(compose_train(tmp_path / name, settings))
    a, b = last_checkpoint(tmp_path / "true"), last_checkpoint(tmp_path / "shuffled")
    assert a["state_dict"]["network.best_head"] == b["state_dict"]["network.best_head"]
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


def test_scan_with_linear_heads_on_frozen_features(tmp_path, weights):  # noqa: F811
    _, checkpoint = run(
        tmp_path,
        weights,
        "objective=scan",
        "features.num_neighbors=5",
        "model.head_style=linear",
        "module.num_cluster_heads=4",
    )
    state = checkpoint["state_dict"]
    heads = {k.split(".")[2] for k in state if k.startswith("network.cluster_heads.")}
    assert heads == {"0", "1", "2", "3"}
    assert state["network.cluster_heads.0.mlp.0.weight"].shape == (10, 192)  # Linear(D=192, K=10)
    assert "network.cluster_heads.0.mlp.1.weight" not in state


def test_head_structures_rank_the_partition_the_embedding_holds_first():
    """Three tight, far-apart blobs: the blobs' own partition (under other cluster ids) scores 1, one
    that merges two blobs and splits the third lower, shuffled and collapsed ones about 0."""
    from vtcc.quality import head_structures

    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(3), 200)
    points = np.eye(3)[truth] * 10 + rng.normal(scale=0.1, size=(600, 3))
    merged_split = np.where(truth == 2, 1, 0)
    merged_split[np.flatnonzero(truth == 0)[::2]] = 2
    heads = [rng.permutation(truth), merged_split, (truth + 1) % 3, np.zeros(600, dtype=int)]
    scores = head_structures(points, heads, k=3, seed=0)
    assert scores[2] == 1.0 and int(np.argmax(scores)) == 2
    assert 0.2 < scores[1] < 0.9 and abs(scores[0]) < 0.05 and scores[3] == 0.0


def test_the_head_the_embedding_supports_clusters_and_the_checkpoint_keeps_it(tmp_path):
    """At the end of a contrastive run of three heads the head with the highest structure is the
    checkpoint's best head, recomputed from the checkpoint alone, and vtcc-eval of it gives the
    run's final metrics."""
    import json

    from tests.conftest import evaluate_in_process
    from vtcc.build import build_data, restore_run
    from vtcc.train import supported_head

    run = tmp_path / "run"
    train(compose_train(run, ["module.num_cluster_heads=3", "trainer.max_epochs=2"]))
    checkpoint = run / "checkpoints" / "last.ckpt"
    run_cfg, module = restore_run(checkpoint)
    data = build_data(run_cfg, module.network)
    data.setup("validate")
    head, scores = supported_head(module.network, data, "cpu", run_cfg.seed)
    assert int(module.network.best_head) == head == int(np.argmax(scores)) and len(scores) == 3
    final = json.loads((run / "final_metrics.json").read_text())
    evaluated = evaluate_in_process(checkpoint, tmp_path / "eval")
    assert evaluated["acc"] == final["acc"] and evaluated["nmi"] == final["nmi"]
