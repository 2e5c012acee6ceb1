"""GAN training: discriminators, who gets gradients when, EMA, warm start, resume, plots."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from srlib.losses import PixelLoss
from srlib.models import PatchDiscriminator, UNetDiscriminator, UNetUpscaler
from srlib.training import TrainConfig, check_config, fit, load_checkpoint, load_model
from srlib.training.config import ADDED_FIELDS
from srlib.training.gan import GanTrainer
from tests.test_train import Interrupting, cfg, pairs, tiny_model

# 6 steps of a tiny model learn little: the NOT LEARNING alert is not what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore::srlib.train.NotLearningWarning")
CPU = torch.device("cpu")


def cloned(state: dict) -> dict:
    return {k: v.clone() for k, v in state.items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class ZeroLoss(nn.Module):
    """A pixel loss of weight zero: whatever moves the generator comes from the GAN."""

    def forward(self, sr, gt):
        zero = (sr * 0).mean()
        return zero, {"zero": zero.detach()}


@pytest.mark.parametrize("size", [(17, 23), (5, 7), (1, 1), (32, 32)])
def test_discriminators_give_logits_of_the_documented_shapes(size):
    h, w = size
    x = torch.rand(2, 3, h, w)
    assert UNetDiscriminator(channels=8)(x).shape == (2, 1, h, w)  # one logit per pixel
    for depth in (1, 3):
        patch = PatchDiscriminator(channels=8, depth=depth)(x)
        assert patch.shape == (2, 1, math.ceil(h / 2**depth), math.ceil(w / 2**depth))
    with pytest.raises(ValueError, match="depth"):
        PatchDiscriminator(depth=0)


def test_the_discriminator_learns_in_its_own_step_only(tmp_path):
    gan = GanTrainer(cfg(tmp_path, gan="unet"), CPU)
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    lq, gt = pairs(4)[:]
    for _ in range(2):  # the second generator step follows a discriminator step
        d_before, g_before = cloned(gan.net.state_dict()), cloned(model.state_dict())
        sr = model(lq)
        loss, parts = gan.generator_loss(sr, torch.zeros(()), {})
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert set(parts) == {"g_adv"}
        assert all(p.grad is None for p in gan.net.parameters())
        assert same(gan.net.state_dict(), d_before)  # spectral norm's state (u, v) included
        assert not same(model.state_dict(), g_before)

        g_before = cloned(model.state_dict())
        g_grads = [p.grad.clone() for p in model.parameters()]
        parts = gan.discriminator_step(sr, gt)
        assert set(parts) == {"d_real", "d_fake"}
        assert all(not torch.equal(p, d_before[k]) for k, p in gan.net.named_parameters())
        assert same(model.state_dict(), g_before)
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), g_grads, strict=True))
        assert all(p.grad is None for p in gan.net.parameters())


def test_the_adversarial_loss_alone_moves_the_generator(tmp_path):
    gan = GanTrainer(cfg(tmp_path, gan="patch"), CPU)
    sr = torch.rand(2, 3, 32, 32, requires_grad=True)
    loss, parts = gan.generator_loss(sr, torch.zeros(()), {})
    (grad,) = torch.autograd.grad(loss, sr)
    assert parts["g_adv"] > 0 and grad.abs().sum() > 0
    # In fit, one step with a pixel loss of weight zero: only the GAN moves the weights.
    for kind, moves in (("none", False), ("unet", True)):
        model = tiny_model()
        before = cloned(model.state_dict())
        fit(
            model,
            ZeroLoss(),
            pairs(),
            None,
            cfg(tmp_path / kind, gan=kind, steps=1),
            progress=False,
        )
        assert same(model.state_dict(), before) != moves


def test_gan_parts_are_in_the_history_and_the_ema_is_what_is_kept(tmp_path):
    model = tiny_model()
    start = cloned(model.state_dict())
    run = cfg(tmp_path, gan="patch", ema=0.5, steps=1, val_every=1)
    hist = fit(model, PixelLoss("l1"), pairs(), pairs(4, seed=1), run, progress=False)
    assert set(hist["train"]) == {"total", "l1", "g_adv", "d_real", "d_fake"}
    l1, g_adv = hist["train"]["l1"][0], hist["train"]["g_adv"][0]
    assert hist["train"]["total"][0] == pytest.approx(l1 + 0.1 * g_adv, rel=1e-6)
    last = load_checkpoint(tmp_path / "t" / "last.pt")
    assert set(last["gan"]) == {"discriminator", "optimizer"}
    # One step: ema = 0.5 * start + 0.5 * trained; readers of "model" get the average.
    for k, v in last["model"].items():
        assert torch.allclose(v, 0.5 * start[k] + 0.5 * last["raw_model"][k], atol=1e-7)
    assert not same(last["model"], last["raw_model"])
    assert same(model.state_dict(), last["model"])  # the returned model
    assert same(load_checkpoint(tmp_path / "t" / "best.pt")["model"], last["model"])
    assert same(load_model(tmp_path / "t" / "last.pt")[0].state_dict(), last["model"])


@pytest.mark.parametrize("kind", ["unet", "patch"])
def test_a_resumed_gan_run_equals_an_uninterrupted_one(tmp_path, kind):
    run = dict(gan=kind, ema=0.9)
    torch.manual_seed(0)
    full_model = tiny_model()
    full = fit(
        full_model,
        PixelLoss("l1"),
        pairs(),
        pairs(4, seed=1),
        cfg(tmp_path / "a", **run),
        progress=False,
    )
    # The same run, interrupted during step 5 (after the step-3 checkpoint), then resumed.
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(
            tiny_model(),
            PixelLoss("l1"),
            Interrupting(pairs(), 4 * 4 + 2),
            pairs(4, seed=1),
            cfg(tmp_path / "b", **run),
            progress=False,
        )
    assert load_checkpoint(tmp_path / "b" / "t" / "last.pt")["step"] == 3
    model = tiny_model()
    resumed = fit(
        model,
        PixelLoss("l1"),
        pairs(),
        pairs(4, seed=1),
        cfg(tmp_path / "b", **run),
        progress=False,
    )
    assert resumed["step"] == list(range(1, 7))
    assert resumed["train"] == full["train"]  # total, l1, g_adv, d_real, d_fake: identical
    assert resumed["val"]["psnr"] == full["val"]["psnr"]  # validated with the EMA
    a, b = (load_checkpoint(tmp_path / d / "t" / "last.pt") for d in ("a", "b"))
    assert same(a["model"], b["model"]) and same(a["raw_model"], b["raw_model"])
    assert same(a["gan"]["discriminator"], b["gan"]["discriminator"])
    a_opt, b_opt = a["gan"]["optimizer"]["state"], b["gan"]["optimizer"]["state"]
    assert a_opt.keys() == b_opt.keys() and all(same(a_opt[i], b_opt[i]) for i in a_opt)
    assert same(model.state_dict(), full_model.state_dict())


def test_init_from_starts_a_run_from_a_checkpoints_weights(tmp_path):
    fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path / "a", steps=3), progress=False)
    source = tmp_path / "a" / "t" / "last.pt"
    warm = load_checkpoint(source)["model"]
    model = tiny_model()
    assert not same(model.state_dict(), warm)
    # lr 0: the generator keeps exactly the weights it started from.
    run = cfg(tmp_path / "b", steps=2, lr=0.0, gan="unet", init_from=str(source))
    fit(model, PixelLoss("l1"), pairs(), None, run, progress=False)
    assert same(model.state_dict(), warm)
    # A finished run returns without reading init_from again.
    source.unlink()
    fit(tiny_model(), PixelLoss("l1"), pairs(), None, run, progress=False)
    with pytest.raises(ValueError, match="no such checkpoint"):
        fit(
            tiny_model(),
            PixelLoss("l1"),
            pairs(),
            None,
            cfg(tmp_path / "c", init_from=str(source)),
            progress=False,
        )
    assert not (tmp_path / "c").exists()


def test_init_from_refuses_another_model(tmp_path):
    fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path / "a", steps=1), progress=False)
    wider = UNetUpscaler(2, (16, 16, 16), (16, 8), 0)
    run = cfg(tmp_path / "b", init_from=str(tmp_path / "a" / "t" / "last.pt"))
    with pytest.raises(ValueError, match="init_from .* another model"):
        fit(wider, PixelLoss("l1"), pairs(), None, run, progress=False)
    assert not (tmp_path / "b").exists()
    not_a_checkpoint = tmp_path / "junk.pt"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable srlib checkpoint"):
        fit(
            tiny_model(),
            PixelLoss("l1"),
            pairs(),
            None,
            cfg(tmp_path / "b", init_from=str(not_a_checkpoint)),
            progress=False,
        )


@pytest.mark.parametrize(
    "bad",
    [
        dict(gan="wgan"),
        dict(gan_weight=-0.1),
        dict(gan_weight=float("inf")),
        dict(gan_lr=float("nan")),
        dict(ema=1.0),
        dict(ema=-0.5),
        dict(init_from=Path("a.pt")),
    ],
)
def test_bad_gan_settings_are_refused(tmp_path, bad):
    (name,) = bad
    with pytest.raises(ValueError, match=name):
        check_config(cfg(tmp_path, **bad))


def test_new_fields_mean_as_before_when_absent():
    new = ("gan", "gan_weight", "gan_lr", "ema", "init_from")
    assert {k: ADDED_FIELDS[k] for k in new} == {k: getattr(TrainConfig(), k) for k in new}
    assert TrainConfig().gan == "none" and TrainConfig().ema == 0.0  # off by default


@pytest.mark.parametrize(
    "run, named, not_named",
    [
        (dict(gan="unet"), "GAN training (gan 'unet')", "EMA"),
        (dict(ema=0.999), "an EMA of the weights (ema 0.999)", "GAN"),  # issue 24: told "GAN"
    ],
)
def test_gan_and_ema_refuse_several_processes(tmp_path, monkeypatch, run, named, not_named):
    import srlib.training.loop

    monkeypatch.setattr(srlib.training.loop, "rank_and_world", lambda: (0, 2))
    with pytest.raises(ValueError) as caught:
        fit(tiny_model(), PixelLoss("l1"), pairs(), None, cfg(tmp_path, **run), progress=False)
    message = str(caught.value)
    assert named in message and not_named not in message
    assert message.endswith("runs in one process for now, not torchrun's 2")


def test_the_loss_plot_shows_the_gan_parts():
    import matplotlib

    matplotlib.use("Agg")
    from srlib.plots import plot_losses

    train = {
        "total": [0.2, 0.1],
        "l1": [0.1, 0.05],
        "g_adv": [0.9, 1.2],
        "d_real": [0.6, 0.5],
        "d_fake": [0.7, 0.4],
    }
    fig = plot_losses({"gan": {"step": [1, 2], "train": train, "val": {"step": [], "psnr": []}}})
    titles = [ax.get_title() for ax in fig.axes]
    for part in ("l1", "g_adv", "d_real", "d_fake"):
        assert f"part: {part}" in titles
    chance = [
        ax
        for ax in fig.axes
        if any(list(ln.get_ydata()) == [math.log(2)] * 2 for ln in ax.get_lines())
    ]
    assert sorted(ax.get_title() for ax in chance) == [
        "part: d_fake",
        "part: d_real",
        "part: g_adv",
    ]
