"""TURTLE pinned to its official code (run_turtle.py, cross_val.py) by a numpy transcription and
closed forms; several representation spaces; runs on frozen features of small vtcc backbones."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import compose_train
from tests.integration.test_head_ranking import Identity  # a backbone whose inputs are its features
from vtcc.data.samplers import IndependentBatches
from vtcc.errors import ConfigError
from vtcc.losses import InnerClassifiers, marginal_entropy, soft_cross_entropy
from vtcc.models import ClusteringNetwork
from vtcc.models.heads import TaskEncoder
from vtcc.models.spaces import SpaceMember, SpacesBackbone, backbone_entry
from vtcc.objectives import TurtleClustering
from vtcc.objectives.turtle import rate_scale
from vtcc.quality import generalization_score
from vtcc.train import train

# --- the numpy transcription of one outer step of run_turtle.py ------------------------------


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def task_weight(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """weight_norm(dim=0): W = g * v / ||v|| with one norm per output row."""
    return g * v / np.linalg.norm(v, axis=1, keepdims=True)


def turtle_step_by_hand(spaces, task, inner, steps, lr, gamma, betas=(0.9, 0.999), eps=1e-8):
    """One outer step written out: labelling = mean of the spaces' softmax; per space, ``steps``
    Adam steps of a linear classifier on the soft cross-entropy against the labelling (gradient
    (p - y)^T z / B); loss = sum_s CE(inner_s, labelling) - gamma * sum_s H(mean_n p_s)."""
    probabilities = [softmax(z @ task_weight(g, v).T + b) for z, (g, v, b) in zip(spaces, task, strict=True)]
    labelling = np.mean(probabilities, axis=0)
    fitted = []
    for z, (weight, bias) in zip(spaces, inner, strict=True):
        params = [weight.copy(), bias.copy()]
        moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
        for t in range(1, steps + 1):
            residual = (softmax(z @ params[0].T + params[1]) - labelling) / len(z)
            grads = [residual.T @ z, residual.sum(axis=0)]
            for p, g, m in zip(params, grads, moments, strict=True):
                m[0] = betas[0] * m[0] + (1 - betas[0]) * g
                m[1] = betas[1] * m[1] + (1 - betas[1]) * g * g
                m_hat, v_hat = m[0] / (1 - betas[0] ** t), m[1] / (1 - betas[1] ** t)
                p -= lr * m_hat / (np.sqrt(v_hat) + eps)
        fitted.append(z @ params[0].T + params[1])
    prediction = sum(-(labelling * log_softmax(logits)).sum(axis=1).mean() for logits in fitted)
    entropy = sum(-(p.mean(0) * np.log(p.mean(0))).sum() for p in probabilities)
    return prediction - gamma * entropy, prediction, entropy, fitted


def turtle_module(space_dims, k, **options) -> TurtleClustering:
    """The rates as given (``rate_width=None``) unless ``options`` say otherwise: the tests of the
    official loop compare it with run_turtle.py at the rates they name."""
    network = ClusteringNetwork(
        Identity(sum(space_dims)), k, instance_dim=None, head_style="turtle", space_dims=space_dims
    )
    options = {"rate_width": None, **options}
    return TurtleClustering(network, optimizer=lambda params: torch.optim.Adam(params, lr=1e-3), **options)


@pytest.mark.parametrize(
    ("space_dims", "scale"),
    [([768], 1.0), ([1536], 1.0), ([96], 8.0), ([384, 96], 8.0), ([16], 10.0), ([76], 10.0)],
)
def test_the_rates_are_the_official_ones_at_768_wide_and_scale_up_on_narrower_spaces(space_dims, scale):
    """run_turtle.py's 1e-3 (inner and outer) on spaces 768 wide or more; below that both are
    multiplied by 768 / the narrowest width, at most 10x; rate_width=None keeps them as given."""
    network = ClusteringNetwork(
        Identity(sum(space_dims)), 3, instance_dim=None, head_style="turtle", space_dims=space_dims
    )
    adam = functools.partial(torch.optim.Adam, lr=1e-3)
    module = TurtleClustering(network, optimizer=adam)
    assert module.inner_lr == pytest.approx(1e-3 * scale)
    assert module.optimizer_factory.keywords["lr"] == pytest.approx(1e-3 * scale)  # the outer Adam's
    kept = TurtleClustering(network, optimizer=adam, rate_width=None)
    assert kept.inner_lr == pytest.approx(1e-3)
    assert rate_scale(None, space_dims) == 1.0
    with pytest.raises(ConfigError, match="module.rate_width=0"):
        TurtleClustering(network, optimizer=adam, rate_width=0)


def task_parameters(head: TaskEncoder) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    for layer in head.layers:
        weights = layer.parametrizations.weight
        out.append(
            (
                weights.original0.detach().double().numpy(),
                weights.original1.detach().double().numpy(),
                layer.bias.detach().double().numpy(),
            )
        )
    return out


@pytest.mark.parametrize("space_dims", [[6], [6, 4]])
def test_one_outer_step_matches_run_turtle_written_out(space_dims):
    torch.manual_seed(0)
    k, n, steps, gamma = 3, 40, 10, 10.0
    module = turtle_module(space_dims, k, inner_steps=steps, gamma=gamma)
    features = torch.randn(n, sum(space_dims)) * 2
    torch.manual_seed(1)  # the inner classifiers are the next draws: fresh nn.Linear(d, K) per space
    inner = [nn.Linear(d, k) for d in space_dims]
    inner = [
        (layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()) for layer in inner
    ]
    torch.manual_seed(1)
    terms = module.losses(features, features)
    spaces = np.split(features.double().numpy(), np.cumsum(space_dims)[:-1], axis=1)
    head = module.network.cluster_projector
    loss, prediction, entropy, fitted = turtle_step_by_hand(
        spaces, task_parameters(head), inner, steps, 1e-3, gamma
    )
    torch.manual_seed(1)
    classifiers = module.inner_classifiers(0, head, torch.device("cpu"))
    ours = classifiers.fit(head.split(features), head(features), steps)  # the inner fit, step by step
    for logits, by_hand in zip(ours, fitted, strict=True):
        assert logits.double().numpy() == pytest.approx(by_hand, abs=1e-5)
    assert terms["loss"].item() == pytest.approx(loss, rel=1e-4)
    assert terms["loss_prediction"].item() == pytest.approx(prediction, rel=1e-4)
    assert terms["loss_entropy"].item() == pytest.approx(entropy, rel=1e-5)


def test_the_outer_gradient_flows_through_the_labelling_only():
    """First order: with the inner classifiers' logits held fixed, the task encoder's gradient is
    the derivative of the written-out loss (central differences on the bias of each space)."""
    torch.manual_seed(0)
    space_dims, k, gamma = [5, 3], 4, 10.0
    module = turtle_module(space_dims, k, gamma=gamma)
    features = torch.randn(30, 8)
    torch.manual_seed(2)
    inner = [nn.Linear(d, k) for d in space_dims]
    inner = [
        (layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()) for layer in inner
    ]
    torch.manual_seed(2)
    module.losses(features, features)["loss"].backward()
    head = module.network.cluster_projector
    spaces = np.split(features.double().numpy(), [5], axis=1)
    task = task_parameters(head)
    *_, fitted = turtle_step_by_hand(spaces, task, inner, 10, 1e-3, gamma)

    def loss_at(params):
        probabilities = [
            softmax(z @ task_weight(g, v).T + b) for z, (g, v, b) in zip(spaces, params, strict=True)
        ]
        labelling = np.mean(probabilities, axis=0)
        prediction = sum(-(labelling * log_softmax(f)).sum(axis=1).mean() for f in fitted)
        return prediction - gamma * sum(-(p.mean(0) * np.log(p.mean(0))).sum() for p in probabilities)

    def numeric_gradient(space: int, part: int, index: tuple[int, ...]) -> float:
        plus = [tuple(x.copy() for x in t) for t in task]
        minus = [tuple(x.copy() for x in t) for t in task]
        plus[space][part][index] += 1e-5
        minus[space][part][index] -= 1e-5
        return (loss_at(plus) - loss_at(minus)) / 2e-5

    for s, layer in enumerate(head.layers):  # the bias and the weight norm g of every row
        bias = [numeric_gradient(s, 2, (c,)) for c in range(k)]
        assert layer.bias.grad.double().numpy() == pytest.approx(np.array(bias), abs=1e-4)
        norms = [numeric_gradient(s, 0, (c, 0)) for c in range(k)]
        g = layer.parametrizations.weight.original0.grad[:, 0].double().numpy()
        assert g == pytest.approx(np.array(norms), abs=1e-4)


def test_a_uniform_task_encoder_has_the_largest_entropy_term():
    """All-zero task encoders label every image 1/K: the entropy term is its maximum, the number
    of spaces times log K (2 log 5 = 3.2189). It is the entropy of the batch mean, not the mean
    of each image's entropy: two sharp images in different clusters give log 2, not 0."""
    module = turtle_module([4, 4], 5)
    for layer in module.network.cluster_projector.layers:
        nn.init.zeros_(layer.bias)
        with torch.no_grad():
            layer.parametrizations.weight.original0.zero_()
    features = torch.randn(20, 8)
    terms = module.losses(features, features)
    assert terms["loss_entropy"].item() == pytest.approx(2 * math.log(5), rel=1e-6)
    sharp = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert marginal_entropy(sharp).item() == pytest.approx(math.log(2))


def test_soft_cross_entropy_is_torch_cross_entropy_with_probability_targets():
    logits, target = torch.randn(7, 4), torch.softmax(torch.randn(7, 4), 1)
    assert soft_cross_entropy(logits, target).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, target).item(), rel=1e-6
    )


def test_the_task_encoder_is_weight_normalised_per_row_and_averages_the_spaces_softmax():
    torch.manual_seed(0)
    head = TaskEncoder([3, 2], 4)
    first = head.layers[0].parametrizations.weight
    assert first.original0.shape == (4, 1)  # one norm g per output row (dim=0)
    assert torch.allclose(first.original0[:, 0], first.original1.norm(dim=1))  # at init: the Linear's own
    x = torch.randn(5, 5)
    by_hand = (
        torch.softmax(x[:, :3] @ head.layers[0].weight.T + head.layers[0].bias, 1)
        + torch.softmax(x[:, 3:] @ head.layers[1].weight.T + head.layers[1].bias, 1)
    ) / 2
    assert torch.allclose(head(x), by_hand, atol=1e-6)
    assert torch.allclose(torch.softmax(head.logits(x), 1), by_hand, atol=1e-6)


def test_the_inner_fit_is_torch_adam_on_a_linear_layer():
    """The written-out inner fit against nn.Linear + torch.optim.Adam + F.cross_entropy with
    probability targets, as run_turtle.py runs it."""
    torch.manual_seed(0)
    features, target = torch.randn(30, 5), torch.softmax(torch.randn(30, 4), 1)
    layer = nn.Linear(5, 4)
    ours = InnerClassifiers([layer.weight], [layer.bias], lr=1e-2)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2, betas=(0.9, 0.999))
    for _ in range(10):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(layer(features), target).backward()
        optimizer.step()
    ours.fit([features], target, 10)
    weight, bias = ours.layer(0)
    assert torch.allclose(weight, layer.weight, atol=1e-6) and torch.allclose(bias, layer.bias, atol=1e-6)


def test_spaces_of_other_widths_fitted_together_are_each_fitted_as_alone():
    """The batched fit zero-pads the narrower space: its padded columns never move, and each
    space's classifier ends where nn.Linear + torch.optim.Adam on that space alone ends."""
    torch.manual_seed(0)
    spaces, target = [torch.randn(25, 7), torch.randn(25, 3)], torch.softmax(torch.randn(25, 4), 1)
    layers = [nn.Linear(7, 4), nn.Linear(3, 4)]
    together = InnerClassifiers([x.weight for x in layers], [x.bias for x in layers], lr=1e-2)
    together.fit(spaces, target, 12)
    assert torch.count_nonzero(together.weight[1, :, 3:]) == 0
    assert torch.count_nonzero(together.moments[2][1, :, 3:]) == 0
    for s, (layer, space) in enumerate(zip(layers, spaces, strict=True)):
        optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
        for _ in range(12):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(layer(space), target).backward()
            optimizer.step()
        assert torch.allclose(together.layer(s)[0], layer.weight, atol=1e-6)
        assert torch.allclose(together.layer(s)[1], layer.bias, atol=1e-6)
    stored = together.state_dict()  # one entry per space, as separate layers stored them
    assert [tuple(state["weight"].shape) for state in stored] == [(4, 7), (4, 3)]
    again = InnerClassifiers.fresh([7, 3], 4, 1e-2, torch.device("cpu"))
    again.load_state_dict(stored)
    assert torch.equal(again.weight, together.weight) and again.step == 12
    assert all(torch.equal(a, b) for a, b in zip(again.moments, together.moments, strict=True))


def test_warm_start_keeps_the_inner_classifiers_and_cold_start_draws_new_ones():
    features = torch.randn(12, 4)
    cold, warm = turtle_module([4], 3, inner_steps=4), turtle_module([4], 3, inner_steps=4, warm_start=True)
    device = torch.device("cpu")
    head = cold.network.cluster_projector
    assert cold.inner_classifiers(0, head, device) is not cold.inner_classifiers(0, head, device)
    for _ in range(2):
        warm.losses(features, features)
    classifier = warm.inner_classifiers(0, warm.network.cluster_projector, device)
    assert classifier.step == 8  # two outer steps of 4 inner steps on the same classifier
    stored: dict = {}
    warm.on_save_checkpoint(stored)  # and a resumed run goes on from them
    again = turtle_module([4], 3, inner_steps=4, warm_start=True)
    again.on_load_checkpoint(stored)
    kept = again.inner_classifiers(0, again.network.cluster_projector, device)
    assert torch.equal(kept.weight, classifier.weight) and kept.step == 8


def test_turtle_refuses_what_its_code_cannot_do():
    with pytest.raises(ConfigError, match="head_style=turtle"):
        TurtleClustering(
            ClusteringNetwork(Identity(4), 3, instance_dim=None, head_style="linear"), optimizer=None
        )
    module = turtle_module([4], 5)
    with pytest.raises(ConfigError, match="smaller than num_clusters=5"):
        module.losses(torch.randn(3, 4), torch.randn(3, 4))
    with pytest.raises(ConfigError, match="do not add up"):
        ClusteringNetwork(Identity(8), 3, instance_dim=None, head_style="turtle", space_dims=[4, 3])
    with pytest.raises(ConfigError, match="feature cache is another backbone's"):
        module.losses(torch.randn(8, 6), torch.randn(8, 6))
    bad = (
        ("gamma", -1.0),
        ("inner_steps", 0),
        ("inner_lr", 0.0),
        ("generalization_folds", 1),
        ("generalization_max_iter", 0),
    )
    for key, value in bad:
        with pytest.raises(ConfigError, match=f"module.{key}={value}"):
            turtle_module([4], 3, **{key: value})


def test_batches_are_drawn_afresh_without_replacement():
    torch.manual_seed(0)
    batches = list(IndependentBatches(10, 4, steps=50))
    assert len(batches) == 50 and all(len(set(b)) == 4 for b in batches)
    assert len({tuple(b) for b in batches}) > 40  # independent draws, not one epoch's partition
    assert (
        sum(len(set(a) & set(b)) for a, b in zip(batches, batches[1:], strict=False)) > 0
    )  # consecutive ones overlap
    assert all(sorted(b) == list(range(10)) for b in IndependentBatches(10, 10, steps=3))


def test_the_generalisation_score_ranks_learnable_clusters_above_arbitrary_ones():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 6)) * 6
    truth = rng.integers(0, 4, 400)
    points = centres[truth] + rng.normal(size=(400, 6))
    assert generalization_score([points], truth, folds=5) == pytest.approx(1.0, abs=0.01)
    shuffled = generalization_score([points], rng.permutation(truth), folds=5)
    assert shuffled < 0.4  # about 1/4: nothing to learn
    two = generalization_score([points, points[:, :3]], truth, folds=5)  # the mean over spaces
    assert two == pytest.approx(
        (
            generalization_score([points], truth, folds=5)
            + generalization_score([points[:, :3]], truth, folds=5)
        )
        / 2
    )


# --- several representation spaces -----------------------------------------------------------


class Probe(nn.Module):
    """Records what it was given; its features are the per-channel means."""

    def __init__(self) -> None:
        super().__init__()
        self.num_features = 3
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x
        return torch.cat([x.mean(dim=(2, 3)), x.new_zeros(len(x), 3 - x.shape[1])], dim=1)


def test_each_backbone_gets_its_own_preprocessing():
    gray, rgb = Probe(), Probe()
    spaces = SpacesBackbone(
        [
            SpaceMember(gray, 8, [0.5], [0.25], "bilinear"),
            SpaceMember(rgb, 16, [0.1, 0.2, 0.3], [1.0, 2.0, 4.0]),
        ]
    )
    pixels = torch.rand(2, 3, 16, 16)
    out = spaces(pixels)
    assert out.shape == (2, 6) and spaces.space_dims == [3, 3]
    luma = (pixels * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    small = torch.nn.functional.interpolate(luma, size=(8, 8), mode="bilinear", antialias=True)
    assert torch.allclose(gray.seen, (small - 0.5) / 0.25, atol=1e-5)
    expected = (pixels - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([1.0, 2.0, 4.0]).view(
        1, 3, 1, 1
    )
    assert torch.allclose(rgb.seen, expected)


def test_normalize_spaces_l2_normalises_each_space_apart():
    network = ClusteringNetwork(Identity(5), 2, instance_dim=None, space_dims=[2, 3], normalize_spaces=True)
    features = network.features(torch.tensor([[3.0, 4.0, 0.0, 0.0, 2.0]]))
    assert torch.allclose(features, torch.tensor([[0.6, 0.8, 0.0, 0.0, 1.0]]))


def test_a_backbone_entry_is_a_name_a_run_or_a_mapping():
    assert backbone_entry("vit_small_patch14_dinov2.lvd142m", 0)["checkpoint"] is None
    assert backbone_entry("runs/a/last.ckpt", 0)["checkpoint"] == "runs/a/last.ckpt"
    assert (
        backbone_entry({"name": "vit_small_patch16_224", "checkpoint": "w.pth"}, 1)["name"]
        == "vit_small_patch16_224"
    )
    for bad, words in (
        ("weights.pth", "without its architecture"),
        (3, "is not a backbone"),
        ({"nam": "x"}, "nam is not"),
    ):
        with pytest.raises(ConfigError, match=words):
            backbone_entry(bad, 0)


# --- runs on frozen features of small vtcc backbones -----------------------------------------

QUICK = [
    "trainer.max_epochs=2",
    "features.steps_per_epoch=15",
    "trainer.check_val_every_n_epoch=2",
    "module.generalization_folds=3",
    "module.generalization_max_iter=200",
]


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> list[Path]:
    """Two finished runs on the digits (seeds 0 and 1): two representation spaces."""
    folder = tmp_path_factory.mktemp("spaces")
    runs = []
    for seed in (0, 1):
        train(
            compose_train(
                folder / f"run{seed}", [f"seed={seed}", "trainer.max_epochs=2", f"paths.log_dir={folder}"]
            )
        )
        runs.append(folder / f"run{seed}" / "checkpoints" / "last.ckpt")
    return runs


def frozen(tmp_path: Path, name: str, *extra: str) -> dict[str, float]:
    overrides = ["model=pretrained", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"]
    report = [] if any(e.startswith("report=") for e in extra) else ["report=false"]
    overrides += [*report, f"paths.log_dir={tmp_path}", *extra]
    return train(compose_train(tmp_path / name, overrides, tiny=False, resolve=False))


def test_turtle_on_one_and_two_spaces_and_one_extraction_per_space_set(tmp_path, backbones, caplog):
    one = frozen(tmp_path, "one", f"model.checkpoint={backbones[0]}", "objective=turtle", *QUICK)
    assert 0.0 < one["generalization"] <= 1.0 and one["acc"] > 0.2  # chance: about 0.1
    stored = torch.load(tmp_path / "one" / "checkpoints" / "last.ckpt", weights_only=True)
    keys = [k for k in stored["state_dict"] if k.startswith("network.cluster_heads.0.")]
    assert sorted(k.rsplit(".", 1)[-1] for k in keys) == ["bias", "original0", "original1"]
    assert stored["vtcc_config"]["model"]["normalize_spaces"] is False
    spaces = [f"model.backbones=[{backbones[0]},{backbones[1]}]"]
    two = frozen(tmp_path, "two", *spaces, "objective=turtle", *QUICK)
    assert two["acc"] > 0.2
    caches = sorted((tmp_path / "cache" / "features").glob("*.pt"))
    assert len(caches) == 2  # one per backbone set
    assert {len(torch.load(c, weights_only=True)["eval"][0]) for c in caches} == {32, 64}  # 32 wide each
    with caplog.at_level("INFO", logger="vtcc"):
        temi = frozen(
            tmp_path, "temi", *spaces, "objective=temi", "trainer.max_epochs=1", "features.num_neighbors=5"
        )
    assert (
        "features loaded from" in caplog.text
        and len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 2
    )
    assert temi["num_clusters"] >= 1  # it trained on the shared cache (1 epoch: too short to score)
    config = json.loads(
        json.dumps(
            torch.load(tmp_path / "temi" / "checkpoints" / "last.ckpt", weights_only=True)["vtcc_config"]
        )
    )
    assert config["model"]["normalize_spaces"] is True  # several spaces, an objective on their concatenation


def test_a_two_space_run_evaluates_and_predicts(tmp_path, backbones, predict_in_process):
    from hydra import compose, initialize_config_dir
    from PIL import Image
    from sklearn.datasets import load_digits

    from vtcc.evaluate import evaluate
    from vtcc.utils.cli import CONFIG_DIR

    spaces = f"model.backbones=[{backbones[0]},{backbones[1]}]"
    final = frozen(tmp_path, "run", spaces, "objective=turtle", *QUICK)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "eval", [f"ckpt_path={ckpt}", "trainer.accelerator=cpu", f"paths.output_dir={tmp_path / 'eval'}"]
        )
    assert evaluate(cfg)["acc"] == pytest.approx(final["acc"])
    (tmp_path / "new").mkdir()
    for i in range(5):
        Image.fromarray((load_digits().images[i] * 16).clip(0, 255).astype(np.uint8)).save(
            tmp_path / "new" / f"{i}.png"
        )
    code, stderr = predict_in_process(tmp_path, f"ckpt_path={ckpt}", "input=new", "output=pred")
    assert code == 0, stderr[-2000:]
    assert len((tmp_path / "pred" / "clusters.csv").read_text().splitlines()) == 6
    # init_from: self-labelling the two-space run's task encoder, with its report at the end
    selflabel = [
        "objective=selflabel",
        f"init_from={ckpt}",
        "module.selflabel_loss.threshold=0.15",
    ]  # 30 steps: soft
    frozen(tmp_path, "selflabel", *selflabel, "trainer.max_epochs=1", "report=true")
    stored = torch.load(tmp_path / "selflabel" / "checkpoints" / "last.ckpt", weights_only=True)[
        "vtcc_config"
    ]
    assert [len(entry["mean"]) for entry in stored["model"]["backbones"]] == [1, 1]  # each one's own, stored
    assert (tmp_path / "selflabel" / "report" / "report.html").is_file()


def test_turtle_bad_settings_are_one_line(tmp_path, backbones, capsys):
    from vtcc.utils.cli import run_safely

    base = [
        "model=pretrained",
        f"model.checkpoint={backbones[0]}",
        "objective=turtle",
        "trainer.accelerator=cpu",
    ]
    for index, (extra, words) in enumerate(
        (
            (["model.mode=partial"], "trains on a frozen backbone's cached features"),
            (["features.batch_size=4"], "smaller than num_clusters=10"),
            (["model.backbones=[a.pth]"], "without its architecture"),
            (["module.gamma=-1"], "module.gamma=-1"),
            (["model.head_style=vtcc"], "keep model.head_style=turtle"),
        )
    ):
        cfg = compose_train(
            tmp_path / f"run{index}", [*base, f"paths.log_dir={tmp_path}", *extra], tiny=False, resolve=False
        )
        with pytest.raises(SystemExit) as stopped:
            run_safely(train, cfg)
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and words in err and "Traceback" not in err, err
        assert not (tmp_path / f"run{index}" / "checkpoints").exists()
