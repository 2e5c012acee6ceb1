"""Model contract: shapes, the shared decoder, freezing, gradients, weights from the cache."""

import pytest
import torch
import torch.nn.functional as F

from srlib.models import (
    Decoder,
    ResNetEncoder,
    ResNetUNetUpscaler,
    UNetEncoder,
    UNetUpscaler,
    build_model,
)


def tiny_unet(scale=2, head_channels=0):
    return UNetUpscaler(
        scale, width=8, depth=2, max_width=16, decoder_channels=(16, 8), head_channels=head_channels
    )


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


@pytest.mark.parametrize("encoder", [UNetEncoder(8, 3, 32), ResNetEncoder(3, pretrained=False)])
def test_encoder_contract(encoder):
    feats = encoder(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == list(encoder.out_channels)
    sizes = [f.shape[-1] for f in feats]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == 32  # highest resolution first
    # One decoder class serves both encoders and returns to the input resolution.
    out = Decoder(encoder.out_channels, [16] * (len(feats) - 1))(feats)
    assert out.shape == (1, 16, 32, 32)


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
    opt.step()
    opt.zero_grad(set_to_none=True)
    # ...and from the second on every trainable parameter learns; frozen ones never do.
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
    for model in (tiny_unet(4), tiny_unet_hr_head(2), tiny_resnet(2)):
        rebuilt = build_model(model.config)
        rebuilt.load_state_dict(model.state_dict())
        lq = torch.rand(1, 3, 12, 12)
        assert torch.equal(model.eval()(lq), rebuilt.eval()(lq))
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model({"arch": "nope"})


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
        UNetUpscaler(depth=3, decoder_channels=(8, 8))
    with pytest.raises(ValueError, match="base"):
        UNetUpscaler(base="nearest")
