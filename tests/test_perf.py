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


def test_threads_follow_the_idle_cores(monkeypatch):
    threads = torch.get_num_threads()
    assert perf.pick_threads(3) == 3  # asked for: taken as is
    monkeypatch.setattr(perf, "idle_cores", lambda seconds=0.25: 0.9)  # one core, mostly busy
    assert perf.pick_threads() == 1
    monkeypatch.setattr(perf, "idle_cores", lambda seconds=0.25: 64.0)
    assert perf.pick_threads() == threads  # never more than torch's own count
    monkeypatch.setattr(perf, "idle_cores", lambda seconds=0.25: None)  # unknown: torch's count
    assert perf.pick_threads() == threads
    monkeypatch.setattr(perf, "idle_cores", lambda seconds=0.25: 0.0)
    with perf.threads_for() as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == threads  # restored


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="idle time is read from /proc/stat")
def test_idle_cores_sees_a_busy_core():
    cores = len(os.sched_getaffinity(0))
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.5)  # the child is up and spinning
        busy = perf.idle_cores(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert busy is not None and 0 <= busy <= cores - 0.5


def test_fit_trains_on_the_threads_it_picks_and_restores_them(tmp_path, monkeypatch):
    from torch.utils.data import TensorDataset

    from srlib.losses import PixelLoss
    from srlib.training import TrainConfig, fit

    threads = torch.get_num_threads()
    monkeypatch.setattr(perf, "idle_cores", lambda seconds=0.25: 0.2)  # a busy machine
    seen = []
    model = UNetUpscaler(2, (4, 4, 4), (4, 4), 0)
    model.register_forward_hook(lambda *a: seen.append(torch.get_num_threads()))
    pairs = TensorDataset(torch.rand(8, 3, 8, 8), torch.rand(8, 3, 16, 16))
    cfg = TrainConfig(steps=2, batch_size=4, val_every=1, checkpoint_every=1, warmup_steps=1,
                      device="cpu", out_dir=str(tmp_path))  # fmt: skip
    hist = fit(model, PixelLoss("l1"), pairs, None, cfg, progress=False)
    assert set(seen) == {1} and hist["threads"] == 1
    assert torch.get_num_threads() == threads
    fit(model, PixelLoss("l1"), pairs, None, TrainConfig(**{**cfg.__dict__, "threads": 2,
        "name": "two"}), progress=False)  # fmt: skip
    assert seen[-1] == 2  # asked for: as asked, busy or not
