"""Diagnostics: the numbers in responses/gradients/identity.csv are what they claim to be."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers.cli import DIAGNOSTICS

from resexp.data import load_data
from resexp.inside import diagnostics as dg
from resexp.models import get_model
from resexp.settings.compose import load_config
from resexp.train.loop import build_model, fit

TIMING = ["seconds", "images_per_s", "elapsed"]


def net(arch="resnet", depth=8, **options):
    torch.manual_seed(0)
    return get_model(arch, depth=depth, in_channels=1, num_classes=10, image_size=12, **options)


def randomise_bn(model):
    """Non-trivial running statistics and affine parameters, so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            for t in (m.running_mean, m.bias):
                t.data = torch.randn(t.shape, generator=g)
            for t in (m.running_var, m.weight):
                t.data = 0.5 + torch.rand(t.shape, generator=g)


def images(n=12, seed=2):
    return torch.randn(n, 1, 12, 12, generator=torch.Generator().manual_seed(seed))


def bn_eval(bn, z):
    return F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def test_layout_finds_the_3x3_layers_and_stages():
    lay = dg.layout(net("resnet", 14), images(2))
    names = [layer.name for layer in lay.layers]
    assert names[:4] == ["stem", "blocks.0.conv1.0", "blocks.0.conv2.0", "blocks.1.conv1.0"]
    assert len(lay.layers) == 13  # depth - 1: every conv but the classifier
    assert [layer.stage for layer in lay.layers] == [0] + [1] * 4 + [2] * 4 + [3] * 4
    assert [b.stage for b in lay.blocks] == [1, 1, 2, 2, 3, 3]
    assert type(lay.layers[1].response).__name__ == "BatchNorm2d"
    bottleneck = dg.layout(net("resnet", 11, bottleneck=True), images(2))
    assert [layer.name for layer in bottleneck.layers] == ["stem", "blocks.0.convs.2.0", "blocks.1.convs.2.0",
                                                   "blocks.2.convs.2.0"]  # 3x3 only, as Fig. 7
    dense = dg.layout(net("mlp_resnet", 6, mlp_widths=[16, 8]), images(2))
    assert [layer.name for layer in dense.layers] == ["stem.0", "blocks.0.fc1.0", "blocks.0.fc2.0",
                                              "blocks.1.fc1.0", "blocks.1.fc2.0"]
    assert [b.stage for b in dense.blocks] == [1, 2]  # the width changes in the second block


def test_response_std_equals_a_hand_computation():
    model = net("plain", 8)
    randomise_bn(model)
    x = images(10)
    lay = dg.layout(model, x[:2])
    responses, _ = dg.forward_stats(model, lay, [x[:3], x[3:]])  # two batches of different size
    stem_z = bn_eval(model.stem_post[0], F.conv2d(x, model.stem.weight, padding=1))
    block = model.blocks[0]
    conv1_z = bn_eval(block.conv1[1], F.conv2d(F.relu(stem_z), block.conv1[0].weight, padding=1))
    conv2_z = bn_eval(block.conv2[1], F.conv2d(F.relu(conv1_z), block.conv2[0].weight, padding=1))
    by_hand = [z.double().std(correction=0).item() for z in (stem_z, conv1_z, conv2_z)]
    assert [r["std"] for r in responses[:3]] == pytest.approx(by_hand, rel=1e-6)
    assert len({round(v, 6) for v in by_hand}) == 3  # three different numbers, not one repeated
    # With each batch's own statistics (iteration 0), BN's buffers untouched:
    buffers = [b.clone() for b in model.buffers()]
    batch, _ = dg.forward_stats(model, lay, [x], batch_stats=True)
    bn = model.stem_post[0]
    stem_b = F.batch_norm(F.conv2d(x, model.stem.weight, padding=1), None, None, bn.weight, bn.bias, True)
    assert batch[0]["std"] == pytest.approx(stem_b.double().std(correction=0).item(), rel=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
    assert model.training  # as it was before (a fresh model is in train mode)


def test_zero_weight_residual_block_is_the_identity():
    model = net("resnet", 14)
    randomise_bn(model)
    block = model.blocks[1]  # 16 -> 16 channels, stride 1
    with torch.no_grad():
        for conv in (block.conv1[0], block.conv2[0]):
            conv.weight.zero_()
        for bn in (block.conv1[1], block.conv2[1]):  # BN of a zero input gives its shift: make it 0
            bn.running_mean.zero_()
            bn.bias.zero_()
    x = images(8)
    lay = dg.layout(model, x[:2])
    responses, identity = dg.forward_stats(model, lay, [x])
    row = identity[1]
    assert (row["block"], row["branch_ratio"], row["change"]) == (2, 0.0, 0.0)
    assert [r["std"] for r in responses if r["block"] == 2] == [0.0, 0.0]
    seen = {}
    block.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    with torch.no_grad(), dg.in_mode(model, False):
        model(x)
    assert torch.equal(seen["y"], seen["x"])  # what goes in comes out
    assert all(r["branch_ratio"] > 0 for r in identity if r["block"] != 2)
    plain = net("plain", 14)
    plain.load_state_dict(model.state_dict())  # the same weights, no shortcuts
    _, plain_identity = dg.forward_stats(plain, dg.layout(plain, x[:2]), [x])
    assert plain_identity[1]["change"] == pytest.approx(1.0)  # relu(0) = 0: the signal is gone


def test_gradient_norms_equal_a_manual_autograd_computation():
    model = net("resnet", 8)
    x, y = images(16), torch.arange(16) % 10
    lay = dg.layout(model, x[:2])
    buffers = copy.deepcopy(dict(model.named_buffers()))
    model.eval()
    rows, loss = dg.gradient_norms(model, lay, x, y)
    assert not model.training  # its mode is restored
    assert all(p.grad is None for p in model.parameters())
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name  # BN statistics restored exactly

    manual = copy.deepcopy(model).train()
    outputs = []

    def keep(module, args, out):
        out.retain_grad()
        outputs.append(out)

    for block in manual.blocks:
        block.register_forward_hook(keep)
    manual_loss = F.cross_entropy(manual(x), y)
    manual_loss.backward()
    weights = [manual.get_submodule(layer.name).weight.grad.norm().item() for layer in lay.layers]
    blocks = [out.grad.norm().item() for out in outputs]
    assert [r["norm"] for r in rows if r["kind"] == "weight"] == pytest.approx(weights, rel=1e-5)
    assert [r["norm"] for r in rows if r["kind"] == "block_output"] == pytest.approx(blocks, rel=1e-5)
    assert loss == pytest.approx(manual_loss.item())
    assert [r["index"] for r in rows if r["kind"] == "block_output"] == [1, 2, 3]


def test_run_csvs_hold_the_checkpoints_measurements(tmp_path, tiny_cfg):
    """The final rows of a real run equal a fresh measurement of its final weights."""
    cfg = tiny_cfg("train.diagnostics_images=100", DIAGNOSTICS)
    fit(cfg, tmp_path / "out")
    run = tmp_path / "out" / "resnet-8-s0"
    responses = pd.read_csv(run / "responses.csv")
    assert sorted(set(responses["epoch"])) == [0, 3]  # default: at initialisation and at the end
    assert responses.groupby("epoch")["bn"].first().tolist() == ["batch", "running"]
    data = load_data(cfg.dataset, torch.device("cpu"))
    model = build_model(cfg).to(memory_format=torch.channels_last)  # as the run's (same conv kernels)
    model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["model"])
    model.eval()
    x = data.normalize(data.test.x[:100])
    stem_z = bn_eval(model.stem_post[0], F.conv2d(x, model.stem.weight, padding=1))
    final = responses[responses["epoch"] == 3].set_index("layer")
    assert final.loc[1, "std"] == pytest.approx(stem_z.double().std(correction=0).item(), rel=1e-6)
    assert final.loc[1, ["arch", "depth", "seed", "iteration"]].tolist() == ["resnet", 8, 0, 12]
    lay = dg.layout(model, x[:2])
    _, identity = dg.forward_stats(model, lay, [x])
    csv_identity = pd.read_csv(run / "identity.csv").query("epoch == 3")
    assert csv_identity["branch_ratio"].tolist() == pytest.approx([r["branch_ratio"] for r in identity], rel=1e-6)
    gradients = pd.read_csv(run / "gradients.csv").query("epoch == 3")
    rows, _ = dg.gradient_norms(model, lay, data.normalize(data.train.x[:64]), data.train.y[:64])
    assert gradients["norm"].tolist() == pytest.approx([r["norm"] for r in rows], rel=1e-5)


def test_diagnostics_leave_training_unchanged_and_off_writes_nothing(tmp_path, tiny_cfg):
    fit(tiny_cfg("train.diagnostics=off"), tmp_path / "off")
    fit(tiny_cfg("train.diagnostics=epoch"), tmp_path / "on")
    off, on = tmp_path / "off" / "resnet-8-s0", tmp_path / "on" / "resnet-8-s0"
    pd.testing.assert_frame_equal(pd.read_csv(off / "metrics.csv").drop(columns=TIMING),
                                  pd.read_csv(on / "metrics.csv").drop(columns=TIMING))
    a = torch.load(off / "checkpoint.pt", weights_only=True)
    b = torch.load(on / "checkpoint.pt", weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert not any((off / f).exists() for f in ("responses.csv", "gradients.csv", "identity.csv"))
    assert sorted(set(pd.read_csv(on / "gradients.csv")["epoch"])) == [0, 1, 2, 3]


def test_bad_diagnostics_setting_is_a_user_error():
    from resexp.errors import UserError

    with pytest.raises(UserError, match="train.diagnostics must be one of off, end, epoch"):
        load_config(["train.diagnostics=sometimes"])
    with pytest.raises(UserError, match='quote "off"'):  # what YAML makes of a bare off
        load_config(["train.diagnostics=false"])
    assert load_config(["train.diagnostics=off"]).train.diagnostics == "off"


@pytest.mark.parametrize("dies_in", [1, 3])
def test_diagnostics_are_exact_after_a_stop_and_resume(tmp_path, tiny_cfg, monkeypatch, dies_in):
    """Every per-epoch file equals an uninterrupted run's after a stop: in epoch 1 (the
    diagnostics of iteration 0 are written, no checkpoint yet: they were written twice) and
    in epoch 3 (after epoch 2's rows and checkpoint: rows past the checkpoint go)."""
    from helpers.interrupt import interrupted_and_resumed

    logged = interrupted_and_resumed(lambda: tiny_cfg("train.diagnostics=epoch"), tmp_path, monkeypatch, dies_in)
    assert logged == list(range(1, dies_in))
    full, cut = tmp_path / "full" / "resnet-8-s0", tmp_path / "cut" / "resnet-8-s0"
    for name in ("metrics.csv", "responses.csv", "gradients.csv", "identity.csv"):
        a, b = pd.read_csv(full / name), pd.read_csv(cut / name)
        assert len(b) == len(a), name
        assert b["epoch"].tolist() == a["epoch"].tolist(), name
        pd.testing.assert_frame_equal(a.drop(columns=[c for c in TIMING if c in a]),
                                      b.drop(columns=[c for c in TIMING if c in b]), check_exact=False)


def test_rows_written_after_the_last_checkpoint_go_from_every_per_epoch_file(tmp_path, tiny_cfg):
    """keep_rows_until trims the diagnostics as it trims metrics.csv; at epoch 0 they all go."""
    from resexp.run.folder import RunDir

    fit(tiny_cfg("train.diagnostics=epoch"), tmp_path / "out")
    run = RunDir(tmp_path / "out" / "resnet-8-s0")
    run.keep_rows_until(2)
    for name in ("metrics.csv", "responses.csv", "gradients.csv", "identity.csv"):
        assert pd.read_csv(run.path / name)["epoch"].max() == 2, name
    run.keep_rows_until(0)
    assert not any((run.path / name).exists() for name in ("metrics.csv", "responses.csv", "gradients.csv"))
