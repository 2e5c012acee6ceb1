"""Model contract: shapes, the shared decoder, freezing, gradients, weights from the cache."""

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srlib.models import (
    Decoder,
    Encoder,
    ResidualUpscaler,
    ResNetEncoder,
    ResNetUNetUpscaler,
    UNetEncoder,
    UNetUpscaler,
    Upscaler,
    build_model,
    upgrade_model_config,
)


def tiny_unet(scale=2, head_channels=0):
    return UNetUpscaler(scale, (8, 16, 16), (16, 8), 0, head_channels=head_channels)


def tiny_unet_hr_head(scale=2):
    return tiny_unet(scale, head_channels=8)  # the optional HR-resolution refinement head


def tiny_resnet(scale=2, **kw):
    kw.setdefault("pretrained", False)
    return ResNetUNetUpscaler(scale, decoder_channels=(16, 16, 8), **kw)


@pytest.mark.parametrize("make", [tiny_unet, tiny_unet_hr_head, tiny_resnet])
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("hw", [(16, 16), (13, 22)])
def test_output_shape(make, scale, hw):
    model = make(scale).eval()
    lq = torch.rand(2, 3, *hw)
    assert model(lq).shape == (2, 3, hw[0] * scale, hw[1] * scale)


ENCODERS = {
    "unet3": lambda: UNetEncoder((8, 16, 32, 32)),
    "unet2": lambda: UNetEncoder((8, 16, 16)),
    "resnet3": lambda: ResNetEncoder(3, pretrained=False),
    "resnet4": lambda: ResNetEncoder(4, pretrained=False),
}


@pytest.mark.parametrize("make", ENCODERS.values(), ids=ENCODERS.keys())
@pytest.mark.parametrize("hw", [(32, 32), (37, 21)])
def test_encoders_satisfy_the_encoder_protocol(make, hw):
    encoder = make()
    assert isinstance(encoder, Encoder) and isinstance(encoder, nn.Module)
    assert isinstance(encoder.stride, int) and encoder.stride == 2 ** (
        len(encoder.out_channels) - 1
    )
    h, w = hw
    feats = encoder(torch.rand(1, 3, h, w))
    assert isinstance(feats, list) and len(feats) == len(encoder.out_channels)
    assert [f.shape[1] for f in feats] == list(encoder.out_channels)
    sizes = [tuple(f.shape[-2:]) for f in feats]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == (h, w)  # highest res. first
    assert sizes[-1] == (math.ceil(h / encoder.stride), math.ceil(w / encoder.stride))
    # One decoder class serves both encoders and returns to the input resolution.
    out = Decoder(encoder.out_channels, [16] * (len(feats) - 1))(feats)
    assert out.shape == (1, 16, h, w)


def test_an_encoder_without_the_contract_is_refused():
    class NoStride(nn.Module):
        out_channels = (3, 3)

        def forward(self, lq):
            return [lq, lq[..., ::2, ::2]]

    assert not isinstance(NoStride(), Encoder)
    with pytest.raises(TypeError, match="stride"):
        Upscaler(NoStride(), (8,), scale=2, head_channels=0, base="bicubic")
    NoStride.stride = 2  # with it, the same module is an encoder
    assert isinstance(NoStride(), Encoder)
    model = Upscaler(NoStride(), (8,), scale=2, head_channels=0, base="bicubic")
    assert model.stride == 2 and model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)


def test_default_models_report_params():
    unet = UNetUpscaler()
    resnet = ResNetUNetUpscaler(pretrained=False)
    # About 0.8 M trainable parameters at the default width; the frozen encoder is not counted.
    assert 0.6e6 < resnet.num_params() < 1.0e6
    assert resnet.num_params(trainable_only=False) > resnet.num_params()
    assert unet.num_params() == unet.num_params(trainable_only=False)


def test_frozen_encoder_stays_frozen_and_in_eval():
    model = tiny_resnet()
    model.train()
    bns = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not bn.training for bn in bns)
    assert all(not p.requires_grad for p in model.encoder.parameters())
    assert model.decoder.training and model.head.training
    # Running statistics must not move during a training-mode forward pass.
    before = [bn.running_mean.clone() for bn in bns]
    model(torch.rand(2, 3, 16, 16) * 5)
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before, bns, strict=True))


@pytest.mark.parametrize("make", [tiny_unet, tiny_unet_hr_head, tiny_resnet])
def test_every_trainable_param_gets_grad_and_frozen_none(make):
    model = make().train()
    lq, gt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32)
    # The head's last layer starts at zero, so the first step moves the head alone...
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    (model(lq) - gt).abs().mean().backward()
    last = model.head.up[0] if model.head.channels == 0 else model.head.out
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.any()}
    assert {n for n, p in model.named_parameters() if p is last.weight or p is last.bias} == grads
    # ...then each zero layer unblocks the one before it: the second step reaches the
    # zero-initialised ResBlock convs (UNet), and from the third on every trainable parameter
    # learns; frozen ones never do.
    for _ in range(2):
        opt.step()
        opt.zero_grad(set_to_none=True)
        (model(lq) - gt).abs().mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


@pytest.mark.parametrize("make", [tiny_unet, tiny_unet_hr_head])
def test_residual_head_starts_near_base_upscale(make):
    model = make().eval()
    lq = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        diff = (model(lq) - model.base_upscale(lq)).abs().mean()
        plain = (model(lq) - F.interpolate(lq, scale_factor=2, mode="nearest")).abs().mean()
    assert diff == 0 < 0.05 < plain  # the residual starts at zero: training begins at the base


def test_build_model_roundtrip():
    for model in (tiny_unet(4), tiny_unet_hr_head(2), tiny_resnet(2, feature_scale=0.5)):
        rebuilt = build_model(model.config)
        assert rebuilt.config == model.config
        rebuilt.load_state_dict(model.state_dict())
        lq = torch.rand(1, 3, 12, 12)
        assert torch.equal(model.eval()(lq), rebuilt.eval()(lq))
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model({"arch": "nope"})


def test_config_is_the_constructor_arguments():
    model = UNetUpscaler(3, (8, 16), decoder_channels=(8,), refine_blocks=2, head_channels=4,
                         base="bilinear")  # fmt: skip
    assert model.config == {
        "arch": "UNetUpscaler", "scale": 3, "encoder_channels": [8, 16],
        "decoder_channels": [8], "refine_blocks": 2, "head_channels": 4, "base": "bilinear",
    }  # fmt: skip
    assert UNetUpscaler().config == {
        "arch": "UNetUpscaler", "scale": 2, "encoder_channels": [24, 32, 64],
        "decoder_channels": [32, 24], "refine_blocks": 2, "head_channels": 0, "base": "bicubic",
    }  # fmt: skip
    # pretrained and download are not stored: rebuilding never downloads.
    assert tiny_resnet(4, download=False, feature_scale=0.2).config == {
        "arch": "ResNetUNetUpscaler", "scale": 4, "depth": 3, "decoder_channels": [16, 16, 8],
        "head_channels": 0, "base": "bicubic", "feature_scale": 0.2,
    }  # fmt: skip


def test_old_unet_configs_rebuild_the_old_architecture():
    # Before encoder_channels: width doubled per level up to max_width, and no refine blocks.
    old = {"arch": "UNetUpscaler", "scale": 2, "width": 8, "depth": 2, "max_width": 12,
           "decoder_channels": [12, 8], "head_channels": 0, "base": "bicubic"}  # fmt: skip
    model = build_model(old)
    assert model.encoder.out_channels == (8, 12, 12) and model.stride == 4
    assert len(model.decoder.refine) == 0
    same = UNetUpscaler(2, (8, 12, 12), (12, 8), refine_blocks=0)
    # Resuming and warm starts compare configs in today's form: the old one is the same model.
    assert upgrade_model_config(old) == same.config == model.config
    assert model.state_dict().keys() == same.state_dict().keys()
    assert all(v.shape == same.state_dict()[k].shape for k, v in model.state_dict().items())


def test_old_checkpoint_configs_still_load():
    # Checkpoints from before feature_scale existed were trained with unscaled features.
    old = {"arch": "ResNetUNetUpscaler", "scale": 2, "depth": 3,
           "decoder_channels": [16, 16, 8], "head_channels": 0, "base": "bicubic"}  # fmt: skip
    model = build_model(old)
    assert model.encoder.feature_scale == 1.0 and model.config == {**old, "feature_scale": 1.0}
    assert not model.has_imagenet_weights  # weights come from the checkpoint, not ImageNet


@pytest.mark.parametrize(
    "cls",
    [UNetEncoder, ResNetEncoder, Decoder, ResidualUpscaler, Upscaler, UNetUpscaler,
     ResNetUNetUpscaler],
)  # fmt: skip
def test_every_constructor_argument_is_documented(cls):
    doc = inspect.getdoc(cls)
    assert "\nArgs:\n" in doc, cls.__name__
    args = doc.split("\nArgs:\n")[1]
    for name in list(inspect.signature(cls.__init__).parameters)[1:]:
        assert f"    {name}: " in args, f"{cls.__name__}: {name} is not documented"


def test_imagenet_weights_from_cache(fake_imagenet_weights):
    model = tiny_resnet(pretrained=True, download=False)
    assert model.has_imagenet_weights
    assert torch.equal(model.encoder.stages[0][0].weight, fake_imagenet_weights["conv1.weight"])


def test_missing_weights_warn_loudly():
    with pytest.warns(UserWarning, match="NOT available"):
        model = tiny_resnet(pretrained=True, download=False)
    assert not model.has_imagenet_weights


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        UNetUpscaler(scale=5)
    with pytest.raises(ValueError, match="decoder width"):
        UNetUpscaler(encoder_channels=(8, 8, 8, 8), decoder_channels=(8, 8))
    with pytest.raises(ValueError, match="positive widths"):
        UNetUpscaler(encoder_channels=())
    with pytest.raises(ValueError, match="base"):
        UNetUpscaler(base="nearest")


def test_unet_resblocks_start_as_the_identity_resnet_unet_decoder_does_not():
    from srlib.models import ResBlock

    deep = UNetUpscaler(2, (32, 32, 64), (32, 32), refine_blocks=16)  # the GPU presets' UNet
    blocks = [m for m in deep.modules() if isinstance(m, ResBlock)]
    assert len(blocks) == 18  # one per decoder block (2) + 16 refine blocks at full LR
    x = torch.rand(1, 32, 8, 8)
    assert all(torch.equal(b(x), x) for b in blocks[-16:])
    assert all(not b.conv2.weight.any() and not b.conv2.bias.any() for b in blocks)
    resnet_blocks = [m for m in tiny_resnet().modules() if isinstance(m, ResBlock)]
    assert resnet_blocks and all(b.conv2.weight.any() for b in resnet_blocks)
