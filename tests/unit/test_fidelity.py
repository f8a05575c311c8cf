"""vtcc against the official VTCC (JackKoLing/VTCC) and Contrastive Clustering (Yunfan-Li/
Contrastive-Clustering) code: every expected value below is read from those repositories."""

from __future__ import annotations

import copy
import math
from functools import partial

import kornia.augmentation as K
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from tests.conftest import compose_train
from vtcc.losses import ClusterLoss, InstanceLoss
from vtcc.models import vit_conv_stem, vtcc_network
from vtcc.objectives import ContrastiveClustering

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _floats(values) -> tuple[float, ...]:
    return tuple(round(float(v), 6) for v in values)


def ops(view: torch.nn.Module) -> list[tuple[str, dict]]:
    """(op, the settings the official transforms fix) for every op of one kornia view, in order."""
    described = []
    for op in view:
        p = float(getattr(op, "p", 1.0))
        settings = getattr(op, "_param_generator", None)
        if isinstance(op, K.RandomResizedCrop):
            described.append(("crop", {"scale": _floats(settings.scale)}))
        elif isinstance(op, K.ColorJitter):
            strength = (settings.brightness, settings.contrast, settings.saturation, settings.hue)
            described.append(("jitter", {"p": p, "strength": _floats(strength)}))
        elif isinstance(op, K.RandomGaussianBlur):
            described.append(("blur", {"p": p, "sigma": _floats(settings.sigma)}))
        else:
            name = {
                K.RandomHorizontalFlip: "flip",
                K.RandomGrayscale: "grayscale",
                K.RandomSolarize: "solarize",
                K.Normalize: "normalize",
            }[type(op)]
            described.append((name, {"p": p}))
    return described


# modules/transform.py of VTCC: train_transform_1 and train_transform_2, in their order.
VTCC_VIEW_1 = [
    ("crop", {"scale": (0.08, 1.0)}),
    ("jitter", {"p": 0.8, "strength": (0.4, 0.4, 0.2, 0.1)}),
    ("grayscale", {"p": 0.2}),
    ("blur", {"p": 1.0, "sigma": (0.1, 2.0)}),
    ("flip", {"p": 0.5}),
    ("normalize", {"p": 1.0}),
]
VTCC_VIEW_2 = [*VTCC_VIEW_1[:4], ("solarize", {"p": 0.2}), *VTCC_VIEW_1[4:]]


def test_vtcc_augmentation_is_the_official_pair():
    cfg = compose_train("x", ["augment=vtcc", "data=cifar10"])
    augment = instantiate(cfg.augment)
    assert ops(augment.view_a) == VTCC_VIEW_1
    assert ops(augment.view_b) == VTCC_VIEW_2


def test_solarize_inverts_from_128_as_pil():
    """PIL's ImageOps.solarize(threshold=128) inverts every value >= 128."""
    cfg = compose_train("x", ["augment=vtcc", "data=cifar10"])
    solarize = [op for op in instantiate(cfg.augment).view_b if isinstance(op, K.RandomSolarize)][0]
    values = torch.arange(256, dtype=torch.float32).div(255).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    expected = torch.where(values * 255 >= 128, 1 - values, values)
    solarize.p = 1.0
    assert torch.allclose(solarize(values.contiguous()), expected)


# Contrastive Clustering's train.py / train_STL10.py: Transforms(size, s, blur) per dataset, no mean/std.
CC_DATASETS = {
    "cc_cifar10": (0.5, False),
    "cc_cifar100_20": (0.5, False),
    "cc_tiny_imagenet": (0.5, False),
    "cc_stl10": (1.0, False),
    "cc_imagenet10": (1.0, True),
    "cc_imagenet_dogs": (1.0, True),
}


@pytest.mark.parametrize("experiment", sorted(CC_DATASETS))
def test_cc_presets_carry_their_datasets_augmentation(experiment):
    s, blur = CC_DATASETS[experiment]
    cfg = compose_train("x", [f"experiment={experiment}"], tiny=False)
    view = instantiate(cfg.augment).view_a
    expected = [
        ("crop", {"scale": (0.08, 1.0)}),
        ("flip", {"p": 0.5}),
        ("jitter", {"p": 0.8, "strength": (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)}),
        ("grayscale", {"p": 0.2}),
        *([("blur", {"p": 0.5, "sigma": (0.1, 2.0)})] if blur else []),
        ("normalize", {"p": 1.0}),
    ]
    assert ops(view) == expected
    if blur:
        assert cfg.augment.view_a.blur_kernel == 23  # GaussianBlur(kernel_size=23)
    assert list(cfg.data.mean) == [0.0, 0.0, 0.0] and list(cfg.data.std) == [1.0, 1.0, 1.0]
    assert cfg.augment.view_b is None  # both views from the same Transforms


@pytest.mark.parametrize("experiment", ["vtcc_rsod", "vtcc_cifar100_20", "vtcc_cifar10"])
def test_vtcc_presets_normalise_with_imagenet_statistics(experiment):
    cfg = compose_train("x", [f"experiment={experiment}"], tiny=False)
    assert list(cfg.data.mean) == IMAGENET_MEAN and list(cfg.data.std) == IMAGENET_STD
    assert cfg.data.image_size == 224 and cfg.data.batch_size == 128  # config/config.yaml
    assert (cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads, cfg.model.patch_size) == (
        384,
        8,
        12,
        16,
    )


@pytest.mark.parametrize("experiment", ["vtcc_cifar10", "vtcc_stl10", "cc_cifar10", "cc_imagenet10"])
def test_paper_presets_train_one_cluster_head_as_the_official_networks(experiment):
    """Both official networks (VTCC's and CC's modules/network.py) hold one cluster projector;
    vtcc's own budgeted runs train several side by side, so the presets must keep one."""
    budget = "time_budget_minutes=10"
    assert compose_train("x", ["objective=contrastive", budget], tiny=False).module.num_cluster_heads > 1
    for overrides in ([], [budget]):
        cfg = compose_train("x", [f"experiment={experiment}", *overrides], tiny=False)
        assert cfg.module.num_cluster_heads == 1


def test_vtcc_init_is_xavier_with_qkv_split_and_tiny_cls_token():
    torch.manual_seed(0)
    width = 384
    model = vit_conv_stem(img_size=32, patch_size=16, embed_dim=width, depth=2, num_heads=12)
    block = model.blocks[0]
    qkv_bound = math.sqrt(6 / (width + width))  # Q, K, V each D x D
    assert block.attn.qkv.weight.abs().max() <= qkv_bound
    assert block.attn.qkv.weight.std().item() == pytest.approx(qkv_bound / math.sqrt(3), rel=0.02)  # 0.051
    fc1_std = math.sqrt(2 / (width + 4 * width))  # xavier-uniform std of a 384 -> 1536 Linear: 0.032
    assert block.mlp.fc1.weight.std().item() == pytest.approx(fc1_std, rel=0.02)
    assert block.attn.proj.weight.std().item() == pytest.approx(math.sqrt(1 / width), rel=0.02)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert all(torch.all(m.bias == 0) for m in linears if m.bias is not None)
    assert 1e-7 < model.cls_token.std().item() < 2e-6
    timm_default = vit_conv_stem(
        img_size=32, patch_size=16, embed_dim=width, depth=2, num_heads=12, weight_init="timm"
    )
    assert timm_default.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_vtcc_models_default_to_the_official_init():
    for model in ("vit_tiny", "vit_small"):
        assert compose_train("x", [f"model={model}"], tiny=False).model.weight_init == "vtcc"


def test_cc_resnet34_keeps_the_last_batchnorm_of_each_block_at_one():
    """CC's modules/resnet.py builds ResNet with zero_init_residual=False."""
    cfg = compose_train("x", ["experiment=cc_cifar10", "data.image_size=32"], tiny=False)
    backbone = instantiate(cfg.model).backbone
    blocks = [m for m in backbone.modules() if type(m).__name__ == "BasicBlock"]
    assert len(blocks) == 3 + 4 + 6 + 3  # ResNet-34
    assert all(torch.all(block.bn2.weight == 1) for block in blocks)
    fan_out = 64 * 7 * 7  # kaiming_normal_(mode="fan_out", nonlinearity="relu") of conv1
    assert backbone.conv1.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)


def official_instance_loss(z_i: torch.Tensor, z_j: torch.Tensor, temperature: float) -> torch.Tensor:
    """modules/contrastive_loss.py InstanceLoss.forward, written out."""
    n = 2 * z_i.shape[0]
    z = torch.cat((z_i, z_j))
    sim = z @ z.T / temperature
    positives = torch.cat((torch.diag(sim, z_i.shape[0]), torch.diag(sim, -z_i.shape[0]))).reshape(n, 1)
    mask = torch.ones(n, n, dtype=torch.bool).fill_diagonal_(False)
    for i in range(z_i.shape[0]):
        mask[i, z_i.shape[0] + i] = mask[z_i.shape[0] + i, i] = False
    logits = torch.cat((positives, sim[mask].reshape(n, -1)), dim=1)
    return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long), reduction="sum") / n


def official_cluster_loss(c_i: torch.Tensor, c_j: torch.Tensor, temperature: float) -> torch.Tensor:
    """modules/contrastive_loss.py ClusterLoss.forward (cluster NT-Xent + entropy term), written out."""
    entropy = 0.0
    for c in (c_i, c_j):
        p = c.sum(0) / c.sum()
        entropy = entropy + math.log(p.shape[0]) + (p * torch.log(p)).sum()
    k = c_i.shape[1]
    c = torch.cat((c_i.T, c_j.T))
    sim = F.cosine_similarity(c.unsqueeze(1), c.unsqueeze(0), dim=2) / temperature
    return official_instance_loss_from_sim(sim, k) + entropy


def official_instance_loss_from_sim(sim: torch.Tensor, half: int) -> torch.Tensor:
    n = 2 * half
    positives = torch.cat((torch.diag(sim, half), torch.diag(sim, -half))).reshape(n, 1)
    mask = torch.ones(n, n, dtype=torch.bool).fill_diagonal_(False)
    for i in range(half):
        mask[i, half + i] = mask[half + i, i] = False
    logits = torch.cat((positives, sim[mask].reshape(n, -1)), dim=1)
    return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long), reduction="sum") / n


def official_step_loss(network, x_i: torch.Tensor, x_j: torch.Tensor) -> torch.Tensor:
    """Network_VTCC.forward: each view through the backbone on its own, then train.py's loss sum."""
    h_i, h_j = network.backbone(x_i), network.backbone(x_j)
    z_i = F.normalize(network.instance_projector.mlp(h_i), dim=1)
    z_j = F.normalize(network.instance_projector.mlp(h_j), dim=1)
    c_i = torch.softmax(network.cluster_projector.mlp(h_i), dim=1)
    c_j = torch.softmax(network.cluster_projector.mlp(h_j), dim=1)
    return official_instance_loss(z_i, z_j, 0.5) + official_cluster_loss(c_i, c_j, 1.0)


def test_training_loss_and_gradients_equal_the_per_view_official_computation():
    torch.manual_seed(0)
    network = vtcc_network(
        num_clusters=5, img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=1, num_heads=2
    ).double()
    reference = copy.deepcopy(network)
    module = ContrastiveClustering(
        network, InstanceLoss(0.5), ClusterLoss(1.0), optimizer=partial(torch.optim.Adam, lr=1e-3)
    )
    x_i = torch.randn(16, 3, 16, 16, dtype=torch.float64)
    x_j = x_i + 0.5 * torch.randn(16, 3, 16, 16, dtype=torch.float64)
    loss = module.losses(x_i, x_j)["loss"]
    expected = official_step_loss(reference, x_i, x_j)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    loss.backward()
    expected.backward()
    for (name, ours), theirs in zip(network.named_parameters(), reference.parameters(), strict=True):
        if ours.grad is not None or theirs.grad is not None:
            assert torch.allclose(ours.grad, theirs.grad, atol=1e-6), name
    # One concatenated forward (both views in one BatchNorm batch) is measurably another loss.
    concatenated = copy.deepcopy(reference)
    z, (p,) = concatenated(torch.cat([x_i, x_j]))  # one head
    other = InstanceLoss(0.5)(z[:16], z[16:]) + sum(ClusterLoss(1.0)(p[:16], p[16:]))
    assert abs(other.item() - expected.item()) > 1e-4
