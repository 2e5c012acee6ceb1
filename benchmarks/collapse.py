"""Why the ResNet-UNet collapsed to its bicubic base, and what fixes it: short runs over seeds.

    python benchmarks/collapse.py                  # every variant, both weights, seeds 0-4
    python benchmarks/collapse.py --variants before,fixed --weights realistic --steps 300

One run: the default ResNet-UNet, L1, the `quick` preset's crops, batch, lr, warmup and clip,
`--steps` steps on the embedded photos (split and crops from the run's seed, the moon photo
held out, as the notebooks do). Reported: the final validation PSNR gain over the model's own
bicubic base upscale, and the share of dead units (ReLU output zero on a whole validation
batch) in the LR-resolution decoder block, whose death is the collapse (sr = base + constant).
A run "learns" when its gain is at least srlib.training.history.MIN_GAIN_DB (0.05 dB).

Weights: `random` (a random ResNet18 with default BatchNorm statistics: this machine has no
ImageNet weights) and `realistic` (random filters with BatchNorm statistics measured on the
embedded photos, so the features have the scale of a trained network's).

Variants (head = the residual head's last convolution; features = what the decoder gets):
  before     head at 0.1x PyTorch's default init, features unscaled: the old default
  zero_head  head zero, features unscaled
  scaled     head at 0.1x default, features x0.1
  lr1e-3     the old default with peak lr 1e-3
  fixed      head zero, features x0.1: the new default
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_all, run_json

# variant -> (head init, feature scale, lr)
VARIANTS = {
    "before": ("small", 1.0, 2e-3),
    "zero_head": ("zero", 1.0, 2e-3),
    "scaled": ("small", 0.1, 2e-3),
    "lr1e-3": ("small", 1.0, 1e-3),
    "fixed": ("zero", 0.1, 2e-3),
}


def realistic_weights(torch_home: Path) -> None:
    """Write a ResNet18 with BatchNorm statistics measured on photos where torchvision looks."""
    import torch
    from torch.optim.swa_utils import update_bn
    from torchvision.models import resnet18

    from srlib.data import SRDataset, embedded_photos, make_loader
    from srlib.models import IMAGENET_MEAN, IMAGENET_STD, resnet18_weights_path

    torch.manual_seed(0)
    net = resnet18(weights=None)
    photos = SRDataset(embedded_photos(), size=128, scale=2, crops_per_image=16, seed=0)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    update_bn([(gt - mean) / std for _, gt in make_loader(photos, batch_size=32)], net)
    path = Path(resnet18_weights_path())  # under TORCH_HOME, set by the caller
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    assert str(path).startswith(str(torch_home))


def feature_sizes(weights: str) -> dict[str, list[float]]:
    """Mean |feature| per encoder level at init, on photo crops: the UNet's vs the ResNet's."""
    import torch

    from srlib import data
    from srlib.models import ResNetUNetUpscaler, UNetUpscaler

    crops = data.SRDataset(
        data.embedded_photos(), size=96, scale=2, method="bilinear", crops_per_image=4, seed=0
    )
    lq = torch.stack([crops[i][0] for i in range(len(crops))])  # (B, 3, 48, 48)
    torch.manual_seed(0)
    models = {"UNet": UNetUpscaler(2)}
    models[f"ResNet-UNet ({weights})"] = ResNetUNetUpscaler(
        2, pretrained=weights == "realistic", download=False, feature_scale=1.0
    )
    with torch.no_grad():
        return {k: [f.abs().mean().item() for f in m.encoder(lq)[1:]] for k, m in models.items()}


def run_one(variant: str, weights: str, seed: int, steps: int, out: Path) -> dict:
    """One short run; returns its validation gain and the dead share of the LR decoder block."""
    import torch

    from srlib import data
    from srlib.losses import make_loss
    from srlib.models import ResNetUNetUpscaler
    from srlib.training import fit, preset, seed_everything
    from srlib.training.history import MIN_GAIN_DB

    head, feature_scale, lr = VARIANTS[variant]
    name = f"{variant}_{weights}_s{seed}"
    every = max(1, steps // 3)
    cfg = preset(
        "quick", name=name, seed=seed, steps=steps, lr=lr, val_every=every, out_dir=str(out)
    )
    sources = data.embedded_photos()
    train_src, val_src = data.split_by_image(sources, 0.25, seed=seed, holdout=["moon"])
    crop = dict(size=cfg.patch_size, scale=cfg.scale, min_crop=cfg.min_crop, seed=seed)
    crop["method"] = cfg.downscale
    train_set = data.SRDataset(train_src, crops_per_image=cfg.crops_per_image, **crop)
    val_set = data.SRDataset(val_src, crops_per_image=8, train=False, **crop)
    seed_everything(seed)
    model = ResNetUNetUpscaler(
        cfg.scale, pretrained=weights == "realistic", download=False, feature_scale=feature_scale
    )
    assert model.has_imagenet_weights == (weights == "realistic")
    if head == "small":  # the old init: PyTorch's default for the last conv, times 0.1
        last = model.head.up[0]
        last.reset_parameters()
        with torch.no_grad():
            last.weight.mul_(0.1)
            last.bias.zero_()
    hist = fit(model, make_loss("l1"), train_set, val_set, cfg, resume=False, progress=False)

    fuse = model.decoder.blocks[-1].fuse  # the LR-resolution block's first conv
    seen = {}
    hook = fuse.register_forward_hook(lambda m, i, o: seen.update(out=o))
    lq, _ = next(iter(data.make_loader(val_set, len(val_set), shuffle=False)))
    with torch.no_grad():
        model.eval()(lq)
    hook.remove()
    dead = (seen["out"].amax(dim=(0, 2, 3)) <= 0).float().mean().item()  # (C,): never > 0
    gain = hist["val"]["psnr"][-1] - hist["val"]["base_psnr"]
    return dict(gain=gain, learns=gain >= MIN_GAIN_DB, dead=dead, steps=hist["step"][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--weights", default="random,realistic")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--features-only", action="store_true", help="only the feature sizes")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)  # variant weights seed out
    args = parser.parse_args()

    if args.one:
        import json

        import torch

        torch.set_num_threads(1)
        variant, weights, seed, out = args.one
        print(json.dumps(run_one(variant, weights, int(seed), args.steps, Path(out))))
        return

    variants, weights = args.variants.split(","), args.weights.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if "realistic" in weights:
            import os

            os.environ["TORCH_HOME"] = str(out / "torch_home")  # inherited by every run
            realistic_weights(out / "torch_home")

        def one(job: tuple) -> dict:
            v, w, s = job
            argv = [__file__, "--one", v, w, str(s), str(out / "runs"), "--steps", str(args.steps)]
            result = {"variant": v, "weights": w, "seed": s, **run_json(argv, threads=1)}
            if "error" in result:
                print(f"{v} {w} seed {s}: FAILED {result['error']}", flush=True)
            else:
                print(
                    f"{v:9s} {w:9s} seed {s}: gain {result['gain']:+.2f} dB, "
                    f"dead {result['dead']:.0%}",
                    flush=True,
                )
            return result

        print("Mean |feature| handed to the decoder at init, per encoder level (unscaled):")
        for w in weights:
            for k, sizes in feature_sizes(w).items():
                if k != "UNet" or w == weights[0]:
                    print(f"  {k:26s} " + " ".join(f"{x:.3f}" for x in sizes))
        if args.features_only:
            return
        jobs = [(v, w, s) for v in variants for w in weights for s in args.seeds]
        results = run_all(one, jobs, args.jobs)

    print(
        f"\nResNet-UNet, L1, {args.steps} steps, seeds {args.seeds}: runs that learn (val "
        "gain >= 0.05 dB over the bicubic (torch) base); median gain; median dead share of the LR "
        "decoder block\n"
    )
    print("| variant | " + " | ".join(f"{w} weights" for w in weights) + " |")
    print("|---|" + "---|" * len(weights))
    for v in variants:
        cells = []
        for w in weights:
            rs = [r for r in results if r["variant"] == v and r["weights"] == w and "gain" in r]
            if not rs:
                cells.append("failed")
                continue
            learned = sum(r["learns"] for r in rs)
            gain = statistics.median(r["gain"] for r in rs)
            dead = statistics.median(r["dead"] for r in rs)
            cells.append(f"{learned}/{len(rs)} learn, {gain:+.2f} dB, {dead:.0%} dead")
        print(f"| {v} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
