"""srlib.perf: the ISA torch computes with, AVX2 emulation, FLOPs per output pixel; model specs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from srlib import perf
from srlib.models import UNetUpscaler, parse_model_spec


def test_flops_per_pixel_counts_each_convolution_exactly():
    # One 3x3 conv 3 -> 12 at LR, pixel-shuffled x2: 3*12*9 multiply-adds per LR pixel, i.e.
    # 2*324/4 FLOPs per output pixel; the shuffle and the ReLU cost nothing.
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.PixelShuffle(2))
    assert perf.flops_per_pixel(net) == pytest.approx(2 * 3 * 12 * 9 / 4)
    # A training step: the backward pass computes the weight gradient (as many FLOPs again) but
    # no gradient for the input, which needs none.
    assert perf.flops_per_pixel(net, train=True) == pytest.approx(2 * 2 * 3 * 12 * 9 / 4)


def test_flops_grow_with_depth_and_a_loss_adds_its_own():
    widths = dict(encoder_channels=(32, 32, 64), decoder_channels=(32, 32))
    small, deep = UNetUpscaler(refine_blocks=0, **widths), UNetUpscaler(refine_blocks=4, **widths)
    per_block = 2 * 2 * 32 * 32 * 9 / 4  # two 32-channel 3x3 convs per ResBlock, per output px
    assert perf.flops_per_pixel(deep) - perf.flops_per_pixel(small) == pytest.approx(4 * per_block)

    class Costly(nn.Module):  # a loss with a conv: its forward and backward count in a step
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1).requires_grad_(False)

        def forward(self, sr, gt):
            loss = (self.conv(sr) - self.conv(gt)).abs().mean()
            return loss, {"l": loss.detach()}

    plain = perf.flops_per_pixel(small, train=True)
    with_loss = perf.flops_per_pixel(small, train=True, loss_fn=Costly())
    assert with_loss - plain == pytest.approx(3 * 2 * 3 * 8)  # sr and gt forward, sr backward


def test_flops_counting_leaves_the_model_untouched():
    model = UNetUpscaler(refine_blocks=1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    perf.flops_per_pixel(model, train=True)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_format_flops():
    assert [perf.format_flops(f) for f in (950, 35_040, 182_400, 3.1e6, 2e9)] == [
        "950",
        "35.0 k",
        "182.4 k",
        "3.1 M",
        "2.0 G",
    ]


def test_cpu_isa_names_the_isa_and_what_limits_it(monkeypatch):
    isa = perf.cpu_isa()
    assert isa.split()[0] in ("AVX2", "AVX-512", "AVX512-BF16", "AMX", "DEFAULT", "NO_AVX")
    assert perf.hardware_isa() in ("AMX", "AVX512-BF16", "AVX-512", "AVX2", "no AVX2")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # only named; torch read it at load
    assert "limited by ONEDNN_MAX_CPU_ISA=AVX2" in perf.cpu_isa()
    assert "thread(s)" in perf.machine_line(3) and " 3 thread(s)" in perf.machine_line(3)


def test_restrict_isa_restarts_the_program_limited_to_avx2(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            sys.path.insert(0, sys.argv[1])
            from srlib.perf import restrict_isa
            print("start", flush=True)
            restrict_isa("avx2")
            import torch
            from srlib.perf import cpu_isa
            print(torch.backends.cpu.get_cpu_capability(), "|", cpu_isa())
            """
        )
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k not in perf.AVX2_ENV}
    out = subprocess.run([sys.executable, str(script), root], capture_output=True, text=True,
                         env=env, timeout=120, check=True).stdout  # fmt: skip
    assert out.count("start") == 2  # ran once, restarted itself once, then went on
    capability, isa = out.strip().splitlines()[-1].split(" | ")
    if torch.cpu._is_avx2_supported():
        assert capability == "AVX2" and isa.startswith("AVX2 (limited by")
    with pytest.raises(ValueError, match="only 'avx2'"):
        perf.restrict_isa("avx512")
    with pytest.raises(RuntimeError, match="before torch is imported"):
        perf.restrict_isa("avx2")  # torch is loaded in this process
    assert perf.restrict_isa(None) is None


def test_model_specs():
    assert parse_model_spec("unet") == ("unet", {})
    assert parse_model_spec(" unet(refine_blocks=4, encoder_channels=(24, 32, 64)) ") == (
        "unet",
        {"refine_blocks": 4, "encoder_channels": (24, 32, 64)},
    )
    for bad, message in [
        ("unet(4)", "not NAME"),
        ("unet(", "not NAME"),
        ("vgg", "unknown model 'vgg'"),
        ("unet(width=4)", "has no \\['width'\\]"),
        ("unet(refine_blocks=__import__('os'))", "literals"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_model_spec(bad)
