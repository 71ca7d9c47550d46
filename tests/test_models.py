import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.cli import TINY, cli
from matplotlib.colors import to_rgb

from resexp.errors import UserError
from resexp.models import arch_info, count_params, get_model, list_models, register_model
from resexp.models.archs import cifar_blocks
from resexp.models.cifar import BasicBlock, PreActBlock
from resexp.models.footprint import check_fits
from resexp.models.mlp import DenseBlock
from resexp.models.registry import option_defaults
from resexp.settings import schema
from resexp.settings.compose import load_config

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


def _register(fn):
    return register_model(label=fn.__name__, colour="#000000", residual=False, depth_rule=cifar_blocks)(fn)


def test_duplicate_registration_is_rejected():
    def resnet(depth: int, in_channels: int, num_classes: int):
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="'resnet' is registered twice"):
        _register(resnet)


def test_an_option_without_a_default_is_rejected():
    def odd_arch(depth: int, in_channels: int, num_classes: int, blocks: int):
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="option blocks needs a default"):
        _register(odd_arch)
    assert "odd_arch" not in list_models()


def test_an_option_whose_default_differs_from_another_archs_is_rejected():
    """One default per option, whichever arch takes it: an unused option is compared with
    it, so two defaults would refuse a value under one arch and not another."""
    def odd_arch(depth: int, in_channels: int, num_classes: int, widths=(1, 2, 3)):
        raise AssertionError("never built")

    with pytest.raises(ValueError, match=re.escape("widths=(1, 2, 3), but another arch has widths=(16, 32, 64)")):
        _register(odd_arch)
    assert "odd_arch" not in list_models()


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


# --------------------------------------------------------------------------- options: used or refused
# A value other than the default for every option some arch takes.
NON_DEFAULT = {"shortcut": "B", "widths": [8, 16, 32], "bottleneck": True, "checkpoint_segments": 2,
               "mlp_widths": [64], "mlp_batch_norm": False}
REFUSED = [(arch, option) for arch in list_models() for option in NON_DEFAULT
           if option not in arch_info(arch).options]


def _override(option: str, value) -> str:
    """``model.OPTION=VALUE`` as typed on a command line."""
    if isinstance(value, (list, tuple)):
        value = f"[{','.join(map(str, value))}]"
    return f"model.{option}={str(value).lower() if isinstance(value, bool) else value}"


def test_every_model_option_has_a_non_default_value_here_and_the_schema_default():
    """The builders' defaults are the schema's (resexp/settings/schema.py), so an unused
    option left at its default is never refused."""
    model_keys = {k.split(".", 1)[1] for k in schema.leaf_fields() if k.startswith("model.")}
    assert set(option_defaults()) == set(NON_DEFAULT) == model_keys - {"arch", "depth"}
    for option, default in option_defaults().items():
        assert schema.default_of(f"model.{option}") == (list(default) if isinstance(default, tuple) else default)
        assert NON_DEFAULT[option] != schema.default_of(f"model.{option}")


@pytest.mark.parametrize("arch, option", REFUSED, ids=[f"{a}-{o}" for a, o in REFUSED])
def test_an_option_the_arch_does_not_take_is_refused(arch, option):
    takes = ", ".join(arch_info(arch).options)
    says = f"model.{option} is not an option of arch {arch} (its options: {takes})"
    with pytest.raises(UserError) as info:
        load_config([f"model.arch={arch}", _override(option, NON_DEFAULT[option])])
    assert str(info.value) == says
    with pytest.raises(UserError, match=re.escape(says)):
        get_model(arch, depth=20, in_channels=1, num_classes=10, image_size=8, **{option: NON_DEFAULT[option]})


def test_the_refused_table_covers_each_family():
    assert {("plain", "shortcut"), ("resnet", "mlp_widths"), ("mlp_resnet", "checkpoint_segments"),
            ("mlp_plain", "bottleneck"), ("preact_resnet", "mlp_batch_norm")} <= set(REFUSED)
    assert ("resnet", "shortcut") not in REFUSED and ("mlp_plain", "mlp_widths") not in REFUSED


@pytest.mark.parametrize("arch", list_models())
def test_an_unused_option_at_its_default_is_accepted(arch):
    unused = {o: v for o, v in option_defaults().items() if o not in arch_info(arch).options}
    assert unused  # every arch leaves some option unused
    cfg = load_config([f"model.arch={arch}", *(_override(o, v) for o, v in unused.items())])
    assert cfg.model.arch == arch


def _fingerprint(model) -> tuple:
    return repr(model), [p.shape for p in model.parameters()], getattr(model, "checkpoint_segments", 0)


@pytest.mark.parametrize("arch", list_models())
def test_every_option_an_arch_takes_changes_the_net(arch):
    """A setting that is accepted is used: each option away from its default builds another net."""
    def build(**options):
        return get_model(arch, depth=20, in_channels=3, num_classes=10, image_size=8, **options)

    default = _fingerprint(build())
    for option in arch_info(arch).options:
        assert _fingerprint(build(**{option: NON_DEFAULT[option]})) != default, option


def test_a_refused_option_through_the_cli_is_one_line_exit_2_and_writes_nothing(monkeypatch, capsys):
    code, stdout, stderr = cli(monkeypatch, capsys, "train", "--out", "out", *TINY, "model.arch=plain",
                               "model.shortcut=B")
    assert (code, stdout) == (2, "")
    assert stderr.strip().splitlines() == [
        "error: model.shortcut is not an option of arch plain (its options: widths, bottleneck, checkpoint_segments)"]
    assert not Path("out").exists()


def test_a_model_too_big_for_the_device_is_one_line():
    cfg = load_config(["model.depth=999999998"])  # a valid config; it fails only where it would train
    with pytest.raises(UserError) as info:
        check_fits(cfg, torch.device("cpu"))
    assert str(info.value).startswith("resnet-999999998 needs about ") and "\n" not in str(info.value)
    huge = load_config(["dataset.num_classes=1000000000000000000"])  # no schema bound: torch's shapes overflow
    with pytest.raises(UserError, match=r"^resnet: a net of these sizes is too large to build, even as shapes \("):
        check_fits(huge, torch.device("cpu"))


# --------------------------------------------------------------------------- torch-free, and how archs are shown
def test_the_registry_and_config_checks_import_no_torch():
    code = ("import sys, resexp.models.registry\n"
            "assert 'torch' not in sys.modules, 'registry'\n"
            "from resexp.settings.compose import load_config\n"
            "load_config(['model.arch=plain', 'model.depth=20'])\n"
            "assert 'torch' not in sys.modules, 'load_config'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _contrast_on_white(colour: str) -> float:
    """WCAG contrast ratio of ``colour`` against white (1: invisible, 21: black)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(colour)]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 1.05 / (luminance + 0.05)


def test_each_arch_has_its_own_visible_colour_and_a_label():
    infos = [arch_info(a) for a in list_models()]
    assert len({to_rgb(i.colour) for i in infos}) == len(infos)
    assert len({i.label for i in infos}) == len(infos)
    # Okabe & Ito's yellow (#F0E442) is 1.3:1 on white; the palette's orange and sky blue about 2.2:1.
    assert all(_contrast_on_white(i.colour) >= 2 for i in infos), [(i.name, i.colour) for i in infos]


def test_plain_nets_come_before_their_residual_twins():
    order = sorted(list_models(), key=lambda a: arch_info(a).order)
    assert sorted(arch_info(a).order for a in order) == list(range(len(order)))
    assert order.index("plain") < order.index("resnet") and order.index("mlp_plain") < order.index("mlp_resnet")
    assert [arch_info(a).residual for a in ("plain", "resnet", "preact_resnet", "mlp_plain", "mlp_resnet")] == \
        [False, True, True, False, True]


def test_an_unknown_arch_names_the_registered_ones():
    with pytest.raises(UserError, match=re.escape("unknown model.arch 'vgg' (available: mlp_plain, mlp_resnet,")):
        arch_info("vgg")
