import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from vtcc.errors import ConfigError
from vtcc.models import ClusteringNetwork, ConvStem, vit_conv_stem, vtcc_network


@pytest.mark.parametrize(
    ("img_size", "patch_size", "in_chans"), [(32, 4, 3), (16, 4, 1), (32, 8, 1), (48, 16, 3)]
)
def test_cls_features_shape(img_size, patch_size, in_chans):
    model = vit_conv_stem(
        img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=32, depth=2, num_heads=4
    )
    assert isinstance(model, VisionTransformer) and isinstance(model.patch_embed, ConvStem)
    assert model.num_features == 32
    assert model(torch.randn(3, in_chans, img_size, img_size)).shape == (3, 32)
    grid = img_size // patch_size
    assert model.pos_embed.shape == (1, grid * grid + 1, 32)


def test_sincos_position_embedding_is_fixed_and_leaves_cls_at_zero():
    model = vit_conv_stem(img_size=32, patch_size=4, embed_dim=32, depth=1, num_heads=2, pos_embed="sincos")
    assert not model.pos_embed.requires_grad
    assert torch.all(model.pos_embed[0, 0] == 0)
    patches = model.pos_embed[0, 1:]
    assert patches.abs().max() <= 1.0 and patches.std() > 0.1
    assert len({tuple(row.tolist()) for row in patches}) == 64  # every position distinct


def test_learned_position_embedding_trains():
    model = vit_conv_stem(img_size=32, patch_size=4, embed_dim=32, depth=1, num_heads=2, pos_embed="learn")
    assert model.pos_embed.requires_grad


def test_invalid_settings_raise_config_errors():
    with pytest.raises(ConfigError, match="pos_embed"):
        vit_conv_stem(pos_embed="rope")
    with pytest.raises(ConfigError, match="num_heads"):
        vit_conv_stem(img_size=32, patch_size=4, embed_dim=30, num_heads=4)


def test_network_outputs_normalised_vectors_and_probabilities():
    network = vtcc_network(
        num_clusters=7, img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=1, num_heads=2
    )
    assert isinstance(network, ClusteringNetwork)
    assert network.instance_projector.mlp[0].out_features == 128  # hidden width 4 x embed
    network.train()
    z, (p,) = network(torch.randn(6, 1, 16, 16))  # one cluster head
    assert z.shape == (6, 128) and torch.allclose(z.norm(dim=1), torch.ones(6), atol=1e-5)
    assert p.shape == (6, 7) and torch.allclose(p.sum(1), torch.ones(6), atol=1e-5) and (p >= 0).all()


def test_projector_layout_and_cluster_count_check():
    network = vtcc_network(
        num_clusters=3, img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2, hidden_dim=24
    )
    layers = [type(m).__name__ for m in network.cluster_projector.mlp]
    assert layers == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert network.cluster_projector.mlp[0].out_features == 24
    with pytest.raises(ConfigError, match="at least 2"):
        vtcc_network(num_clusters=1, img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2)
