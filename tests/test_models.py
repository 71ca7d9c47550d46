import math
import re

import pytest
import torch

from resexp.errors import UserError
from resexp.models import count_params, get_model, list_models, register_model
from resexp.models.cifar import BasicBlock, PreActBlock
from resexp.models.mlp import DenseBlock

# He et al. 2016, Table 6: parameters of the CIFAR-10 ResNets (option A).
TABLE6_PARAMS_M = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}


def cifar(arch, depth, **kw):
    return get_model(arch, depth=depth, in_channels=3, num_classes=10, **kw)


@pytest.mark.parametrize("depth", sorted(TABLE6_PARAMS_M))
def test_parameter_counts_match_table6(depth):
    n = count_params(cifar("resnet", depth))
    digits = 2 if TABLE6_PARAMS_M[depth] < 1 else 1
    assert round(n / 1e6, digits) == TABLE6_PARAMS_M[depth]


@pytest.mark.parametrize("depth", [20, 56, 110])
def test_plain_and_resnet_option_a_have_identical_parameters(depth):
    plain, res = cifar("plain", depth), cifar("resnet", depth)
    assert count_params(plain) == count_params(res)
    assert [p.shape for p in plain.parameters()] == [p.shape for p in res.parameters()]


def test_option_b_adds_projections_only_where_shape_changes():
    # two stage transitions, each a 1x1 conv (cin*cout) + BN (2*cout)
    extra = count_params(cifar("resnet", 20, shortcut="B")) - count_params(cifar("resnet", 20))
    assert extra == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_preact_bottleneck_164_matches_identity_mappings_paper():
    # He et al. 2016b, Table 3: ResNet-164 (bottleneck, pre-activation) has 1.7M parameters.
    assert round(count_params(cifar("preact_resnet", 164, bottleneck=True)) / 1e6, 1) == 1.7


@pytest.mark.parametrize("arch,depth,message", [
    ("resnet", 1000, "nearest valid depths are 998 and 1004"),
    ("plain", 21, "nearest valid depths are 20 and 26"),
    ("preact_resnet", 1000, "9n+2 (bottleneck blocks): nearest valid depths are 992 and 1001"),
    ("mlp_plain", 11, "nearest valid depths are 10 and 12"),
    ("resnet", 2, "smallest is 8"),
])
def test_invalid_depth_names_nearest_valid(arch, depth, message):
    with pytest.raises(UserError, match=re.escape(message)):
        get_model(arch, depth=depth, in_channels=1, num_classes=10, bottleneck=arch == "preact_resnet")


def test_duplicate_registration_is_rejected():
    with pytest.raises(ValueError, match="registered twice"):
        register_model("resnet")(lambda depth: None)


DEPTHS = {"plain": [8, 20], "resnet": [8, 20], "preact_resnet": [8, 11], "mlp_plain": [4, 10],
          "mlp_resnet": [4, 10]}


@pytest.mark.parametrize("arch", list_models())
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_every_model_forward_backward(arch, channels, size):
    assert set(DEPTHS) == set(list_models())  # a new model needs depths here
    for i, depth in enumerate(DEPTHS[arch]):
        torch.manual_seed(0)
        model = get_model(arch, depth=depth, in_channels=channels, num_classes=7, image_size=size,
                          bottleneck=(arch == "preact_resnet" and i == 1))
        x = torch.randn(4, channels, size, size)
        out = model(x)
        assert out.shape == (4, 7)
        assert torch.isfinite(out).all()
        out.square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, f"{arch}-{depth}: no gradient for {missing[:3]}"


def zero_(module):
    """Zero every conv/linear weight and BN shift, as if SGD had learned z = 0."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if not name.endswith("weight") or p.ndim > 1:
                p.zero_()


@pytest.mark.parametrize("block", [
    BasicBlock(16, 16, 1, "A"),
    DenseBlock(32, 32, batch_norm=True, residual=True),
    DenseBlock(32, 32, batch_norm=False, residual=True),
])
def test_zero_residual_block_is_identity(block):
    """The founding note: with zero weights z[l+2] = 0, so a[l+2] = g(a[l]) = a[l] for a >= 0."""
    zero_(block)
    block.train()
    shape = (8, 16, 6, 6) if isinstance(block, BasicBlock) else (8, 32)
    a = torch.rand(shape)  # non-negative, as the output of a ReLU is
    assert torch.equal(block(a), a)


def test_zero_plain_block_is_not_identity():
    """...whereas the plain block with zero weights outputs zero: it must *learn* the identity."""
    block = DenseBlock(32, 32, batch_norm=True, residual=False)
    zero_(block)
    a = torch.rand(8, 32) + 0.1
    assert torch.equal(block(a), torch.zeros_like(a))


def test_preact_block_identity_when_last_conv_zero():
    block = PreActBlock(16, 16, 1, "A")
    with torch.no_grad():
        block.convs[1][2].weight.zero_()
    a = torch.randn(2, 16, 5, 5)  # pre-activation: identity for any sign
    assert torch.equal(block(a), a)


def test_mlp_projection_where_width_changes():
    model = get_model("mlp_resnet", depth=10, in_channels=1, num_classes=10, image_size=28,
                      mlp_widths=[64, 32])
    projections = [b.shortcut for b in model.blocks if isinstance(b.shortcut, torch.nn.Linear)]
    assert len(projections) == 1 and projections[0].weight.shape == (32, 64)
    plain = get_model("mlp_plain", depth=10, in_channels=1, num_classes=10, image_size=28, mlp_widths=[64, 32])
    assert count_params(model) - count_params(plain) == 64 * 32


def test_he_init_std():
    model = cifar("plain", 56)
    conv = model.blocks[10].conv1[0]
    fan_in = conv.weight[0].numel()
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)


def test_deep_mlp_builds_thousands_of_layers():
    model = get_model("mlp_resnet", depth=2000, in_channels=1, num_classes=10, image_size=8, mlp_widths=[8])
    assert len(model.blocks) == 999
    assert torch.isfinite(model(torch.rand(4, 1, 8, 8))).all()


def test_checkpointed_model_matches_plain_forward():
    torch.manual_seed(0)
    a = cifar("resnet", 20)
    b = cifar("resnet", 20, checkpoint_segments=3)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3, 32, 32)
    a.eval(), b.eval()
    assert torch.allclose(a(x), b(x))
    b.train()
    b(x).sum().backward()
    assert all(p.grad is not None for p in b.parameters())


def test_more_checkpoint_segments_than_blocks_is_one_clear_error():
    with pytest.raises(UserError, match=r"model.checkpoint_segments=8 is more than the 6 blocks"):
        cifar("resnet", 14, checkpoint_segments=8)
    assert cifar("resnet", 14, checkpoint_segments=6).checkpoint_segments == 6
