"""Pretrained-backbone mode on a small random timm ViT saved to a local file (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import compose_train, evaluate_in_process
from vtcc.data import load_digits
from vtcc.errors import ConfigError
from vtcc.losses import ScanLoss, nearest_neighbors
from vtcc.models.pretrained import pretrained_network
from vtcc.train import train

VIT = "vit_tiny_patch16_224"
KWARGS = "model.model_kwargs={img_size:32,patch_size:8,depth:3}"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    backbone = timm.create_model(VIT, pretrained=False, num_classes=0, img_size=32, patch_size=8, depth=3)
    save_file(backbone.state_dict(), folder / "vit.safetensors")
    torch.save(backbone.state_dict(), folder / "vit.pth")
    arrays = load_digits()
    np.savez(folder / "digits.npz", x=arrays.images[:256, 0].numpy(), y=arrays.labels[:256].numpy())
    return folder


def overrides(weights: Path, *extra: str) -> list[str]:
    return [
        "model=pretrained",
        f"model.name={VIT}",
        f"model.checkpoint={weights / 'vit.safetensors'}",
        KWARGS,
        "data=npz",
        f"data.root={weights / 'digits.npz'}",
        "data.in_chans=1",
        "data.batch_size=64",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=2",
        "trainer.check_val_every_n_epoch=1",
        "trainer.enable_progress_bar=false",
        "features.num_views=4",
        "features.batch_size=64",
        "report=false",  # no test here reads it
        f"paths.log_dir={weights / 'outputs'}",
        *extra,
    ]


def run(tmp_path: Path, weights: Path, *extra: str) -> tuple[dict[str, float], dict]:
    metrics = train(compose_train(tmp_path, overrides(weights, *extra), tiny=False, resolve=False))
    return metrics, torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)


def backbone_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    prefix = "network.backbone."
    return {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def test_frozen_mode_keeps_the_backbone_and_uses_its_preprocessing(tmp_path, weights):
    metrics, checkpoint = run(tmp_path / "frozen", weights)
    assert checkpoint["vtcc_config"]["module"]["num_cluster_heads"] == 5  # only the heads train
    original = load_file(weights / "vit.safetensors")
    trained = backbone_state(checkpoint)
    assert trained.keys() == original.keys()
    assert all(torch.equal(trained[k], original[k]) for k in original)
    config = checkpoint["vtcc_config"]["data"]
    assert (
        config["image_size"] == 32
        and config["mean"] == [0.5, 0.5, 0.5]
        and config["interpolation"] == "bicubic"
    )
    for key in ("acc", "acc_many_to_one"):  # counts of matched images among the npz's 256
        assert abs(metrics[key] * 256 - round(metrics[key] * 256)) < 1e-4


def test_feature_cache_is_reused_and_invalidated(tmp_path, weights, caplog):
    caches = weights / "outputs" / "cache" / "features"
    run(tmp_path / "a", weights, "seed=7")
    first = set(caches.glob("*.pt"))
    with caplog.at_level("INFO", logger="vtcc"):
        run(tmp_path / "b", weights, "seed=7")
    assert set(caches.glob("*.pt")) == first and "features loaded from" in caplog.text
    run(tmp_path / "c", weights, "seed=7", "augment.view_a.rotation=5")  # another transform
    second = set(caches.glob("*.pt"))
    assert len(second - first) == 1
    run(tmp_path / "d", weights, "seed=7", f"model.checkpoint={weights / 'vit.pth'}")  # another weights file
    assert len(set(caches.glob("*.pt")) - second) == 1


def test_partial_mode_trains_only_the_last_blocks(tmp_path, weights):
    _, checkpoint = run(
        tmp_path, weights, "model.mode=partial", "model.trainable_blocks=1", "trainer.max_epochs=1"
    )
    original = load_file(weights / "vit.safetensors")
    trained = backbone_state(checkpoint)
    changed = {k for k in original if not torch.equal(trained[k], original[k])}
    assert changed and all(k.startswith(("blocks.2.", "norm.")) for k in changed)
    assert any(k.startswith("blocks.2.") for k in changed)


def test_full_mode_decays_the_learning_rate_layer_by_layer(weights):
    network = pretrained_network(
        VIT,
        5,
        checkpoint=str(weights / "vit.pth"),
        mode="full",
        backbone_lr_scale=1.0,
        layer_decay=0.5,
        model_kwargs={"img_size": 32, "patch_size": 8, "depth": 3},
    )
    groups = network.param_groups(lr=1.0)
    assert groups[0]["lr"] == 1.0  # the heads
    rates = sorted({round(g["lr"], 6) for g in groups[1:]})
    assert rates == [0.125, 0.25, 0.5, 1.0]  # embeddings, blocks 0 and 1, block 2 with the final norm
    assert all(p.requires_grad for p in network.parameters())
    decayed = network.param_groups(lr=1.0, weight_decay=0.05)[1:]  # module.optimizer.weight_decay acts
    qkv = network.backbone.blocks[0].attn.qkv
    assert [g["weight_decay"] for g in decayed if any(p is qkv.weight for p in g["params"])] == [0.05]
    assert [g["weight_decay"] for g in decayed if any(p is qkv.bias for p in g["params"])] == [0.0]


def test_scan_objective_on_neighbours(tmp_path, weights):
    metrics, checkpoint = run(tmp_path, weights, "objective=scan", "features.num_neighbors=5")
    assert checkpoint["vtcc_config"]["module"]["_target_"] == "vtcc.objectives.ScanClustering"
    assert abs(metrics["acc"] * 256 - round(metrics["acc"] * 256)) < 1e-4


def test_scan_needs_a_frozen_backbone(tmp_path):
    with pytest.raises(ConfigError, match="needs neighbours from a pretrained backbone"):
        train(compose_train(tmp_path, ["objective=scan", "trainer.max_epochs=1", "callbacks=none"]))


def test_nearest_neighbours_are_exact():
    features = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    found = nearest_neighbors(features, k=4, chunk=7)
    normed = torch.nn.functional.normalize(features, dim=1)
    similarity = normed @ normed.T
    similarity.fill_diagonal_(-2)
    assert torch.equal(found, similarity.topk(4, dim=1).indices)


def test_scan_loss_prefers_agreeing_neighbours_and_balanced_clusters():
    sharp = torch.eye(4).repeat(4, 1) * 0.97 + 0.01
    consistency_same, entropy_same = ScanLoss(entropy_weight=1.0)(sharp, sharp)
    consistency_other, _ = ScanLoss(entropy_weight=1.0)(sharp, sharp.roll(1, dims=1))
    assert consistency_same < consistency_other
    assert entropy_same.item() == pytest.approx(0.0, abs=1e-6)  # evenly spread over the 4 clusters


@pytest.mark.slow
def test_eval_and_predict_work_on_a_pretrained_checkpoint(tmp_path, weights, predict_in_process):
    args = [a for a in overrides(weights) if not a.startswith("paths.log_dir")]
    final = train(
        compose_train(
            tmp_path / "run", [*args, f"paths.log_dir={tmp_path / 'outputs'}"], tiny=False, resolve=False
        )
    )
    evaluated = evaluate_in_process(tmp_path / "run/checkpoints/last.ckpt", tmp_path / "eval")
    assert evaluated["acc"] == pytest.approx(final["acc"])
    (tmp_path / "new").mkdir()
    from PIL import Image

    for i in range(5):
        Image.fromarray(load_digits().images[i, 0].numpy()).save(tmp_path / "new" / f"{i}.png")
    code, stderr = predict_in_process(
        tmp_path, "ckpt_path=run/checkpoints/last.ckpt", "input=new", "output=pred"
    )
    assert code == 0, stderr[-2000:]
    assert len((tmp_path / "pred/clusters.csv").read_text().splitlines()) == 6


def test_bad_pretrained_settings(tmp_path, weights):
    with pytest.raises(ConfigError, match="does not exist"):
        pretrained_network(VIT, 5, checkpoint=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="timm has no model"):
        pretrained_network("no_such_net", 5, checkpoint=str(weights / "vit.pth"))
    with pytest.raises(ConfigError, match="model.mode"):
        pretrained_network(
            VIT,
            5,
            checkpoint=str(weights / "vit.pth"),
            mode="half",
            model_kwargs={"img_size": 32, "patch_size": 8, "depth": 3},
        )


def test_held_out_split_with_cached_features_trains_on_train_and_scores_on_test(tmp_path, weights):
    """data.eval_split=test: the heads train on the train split only, SCAN's neighbours come from
    it, and evaluation sees the test split under its global indices."""
    from tests import fake_data
    from vtcc.build import build_run, prepare_run

    fake_data.write_cifar10(tmp_path / "data", per_file=8)  # 40 train + 8 test images
    settings = [
        o
        for o in overrides(weights, "objective=scan", "features.num_neighbors=3")
        if not o.startswith("data")
    ]
    cfg = compose_train(
        tmp_path / "run",
        [
            *settings,
            "data=cifar10",
            f"data.root={tmp_path / 'data'}",
            "data.eval_split=test",
            "data.batch_size=8",
        ],
        tiny=False,
    )
    prepared = prepare_run(cfg, [])
    datamodule = build_run(prepared.cfg, prepared.source).datamodule
    is_test = datamodule.source.arrays.is_test
    assert len(datamodule.cache["eval"]) == 48  # every image's features, in global order
    trained = datamodule.train_dataloader().dataset.tensors[0]
    assert sorted(trained.tolist()) == torch.nonzero(~is_test).flatten().tolist()
    features, labels, indices = next(iter(datamodule.val_dataloader()))
    assert indices.tolist() == torch.nonzero(is_test).flatten().tolist()
    assert torch.equal(labels, datamodule.source.arrays.labels[indices])
    neighbors = datamodule.cache["neighbors"][trained]
    assert not is_test[neighbors].any()  # neighbours of training images are training images


def test_feature_cache_follows_the_datas_contents(tmp_path, weights):
    """The same file name with one image changed is other data: new features, not the old cache."""
    caches = weights / "outputs" / "cache" / "features"
    before = set(caches.glob("*.pt"))
    run(tmp_path / "a", weights, "seed=11", "trainer.max_epochs=1")
    first = set(caches.glob("*.pt")) - before
    digits = np.load(weights / "digits.npz")
    changed = digits["x"].copy()
    changed[0] = 255 - changed[0]
    np.savez(tmp_path / "digits.npz", x=changed, y=digits["y"])
    data = [f"data.root={tmp_path / 'digits.npz'}"]
    run(tmp_path / "b", weights, "seed=11", "trainer.max_epochs=1", *data)
    assert len(first) == 1 and len(set(caches.glob("*.pt")) - before - first) == 1


def test_a_vtcc_run_as_frozen_backbone_evaluates(tmp_path):
    """model.checkpoint=<run>.ckpt: eval rebuilds that run's backbone, not a timm model by name."""
    from hydra import compose, initialize_config_dir

    from vtcc.build import restore_run
    from vtcc.evaluate import evaluate
    from vtcc.utils.cli import CONFIG_DIR

    source = compose_train(tmp_path / "source", ["trainer.max_epochs=1", "data.batch_size=256"])
    train(source)
    backbone_ckpt = tmp_path / "source/checkpoints/last.ckpt"
    cfg = compose_train(
        tmp_path / "frozen",
        [
            "model=pretrained",
            f"model.checkpoint={backbone_ckpt}",
            "trainer.accelerator=cpu",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "data.batch_size=256",
            "features.num_views=2",
            "report=false",
            f"paths.log_dir={tmp_path / 'outputs'}",
        ],
        tiny=False,
    )
    trained = train(cfg)
    _, module = restore_run(tmp_path / "frozen/checkpoints/last.ckpt")
    assert type(module.network.backbone).__name__ == "VisionTransformer"
    assert module.network.backbone.patch_embed.__class__.__name__ == "ConvStem"  # the vtcc run's
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        eval_cfg = compose(
            "eval",
            overrides=[
                f"ckpt_path={tmp_path / 'frozen/checkpoints/last.ckpt'}",
                f"paths.output_dir={tmp_path / 'eval'}",
                "trainer.accelerator=cpu",
            ],
        )
    assert evaluate(eval_cfg)["acc"] == pytest.approx(trained["acc"])


def test_extraction_states_its_cost_first_and_takes_fewer_views_on_a_cpu(tmp_path, weights, caplog):
    """features.num_views=auto is 4 on a CPU; the first line gives images x views x FLOPs, the
    FLOPs of this ViT counted by hand: 3 blocks of qkv, proj, fc1 and fc2 matmuls over 17 tokens
    of width 192, plus the 8 px patch projection of 16 patches (torch's FLOP counter does not
    count the fused CPU attention kernel, 2 x 2 x 17 x 17 x 192 a block: 1.4 % more here)."""
    with caplog.at_level("INFO", logger="vtcc"):
        run(tmp_path, weights, "features.num_views=auto", "trainer.max_epochs=1", "seed=13")  # no cache yet
    tokens, width = 17, 192
    block = 2 * tokens * width * (3 * width + width + 4 * width + 4 * width)
    flops = 3 * block + 2 * 16 * width * (3 * 8 * 8)
    assert "features.num_views=4 (CPU" in caplog.text
    assert f"256 images x 4 views (+1 evaluation view) x {flops / 1e9:.3g} GFLOP" in caplog.text
    assert "feature extraction: about" in caplog.text and "feature extraction: 256 images done" in caplog.text
    config = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["vtcc_config"]
    assert config["features"]["num_views"] == 4


def test_scan_trains_the_backbone_on_fresh_views_of_mined_neighbours(tmp_path, weights):
    """model.mode=partial: neighbours mined once from the pretrained features of the evaluation
    view; each step pairs a fresh view of an image with a fresh view of one of its neighbours."""
    from vtcc.build import build_data, build_network, prepare_run

    settings = overrides(weights, "objective=scan", "features.num_neighbors=5", "model.mode=partial")
    cfg = compose_train(tmp_path / "pairs", [*settings, "num_clusters=10"], tiny=False, resolve=False)
    prepared = prepare_run(cfg, [])  # the model's preprocessing and the data's auto settings
    cfg, source = prepared.cfg, prepared.source
    network = build_network(cfg)
    pairs = build_data(cfg, network, source)
    with torch.no_grad():
        images = source.model_channels(source.images_at(torch.arange(256)))
        features = network.backbone.eval()(source.eval_transform(images))
    assert torch.equal(pairs.neighbors, nearest_neighbors(features, 5))
    anchors, partners = pairs._pairs((torch.arange(8),))
    for i in range(8):
        assert any(torch.equal(partners[i], source.images_at(j)) for j in pairs.neighbors[i])

    _, checkpoint = run(tmp_path / "run", weights, *settings[-3:])
    changed = {
        k
        for k, v in backbone_state(checkpoint).items()
        if not torch.equal(v, load_file(weights / "vit.safetensors")[k])
    }
    assert changed and all(k.startswith(("blocks.1.", "blocks.2.", "norm.")) for k in changed)
