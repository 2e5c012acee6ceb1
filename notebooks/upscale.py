# %% [markdown] tags=["unet"]
# # Super-resolution with a plain UNet
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/srlib-project/srlib/blob/main/upscale_unet.ipynb)
#
# A UNet trained from scratch: a conv encoder, skip connections, a decoder of ResNet blocks at
# LR resolution, and a small head that pixel-shuffles to HR and predicts the difference to a
# bicubic upscale.
#
# We train it twice, with an **L1** loss and with the **perceptual** loss (ResNet18 features
# after 3 and 6 children + 0.01 L1), then compare both with classic upscales and with the other
# notebook's model on photos none of them saw.
#
# Everything shared with the other notebook comes from `srlib/`, and every code cell except the
# configuration is the same in both notebooks (one source, `notebooks/upscale.py`, makes both; a
# test checks it). Cells marked *Look inside* open up one idea on one crop (the residual head,
# the loss's parts, one training step); they change nothing the training runs use. Run it top
# to bottom (at most 10 minutes on a 2-core CPU without AVX-512, with the default `quick`
# preset), or headless: `jupyter execute upscale_unet.ipynb`. On a GPU (Colab: the badge above)
# the `gpu` preset is picked by itself. The stop button ends training cleanly: a checkpoint is
# written, the run resumes when the cell runs again, and the later cells use the model as it is.

# %% [markdown] tags=["resnet"]
# # Super-resolution with a frozen ResNet18 encoder
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/srlib-project/srlib/blob/main/upscale_resnet.ipynb)
#
# A UNet whose encoder is the first blocks of an ImageNet ResNet18, **frozen** (no gradients,
# BatchNorm kept in eval mode). The decoder (ResNet blocks with skip connections, at LR
# resolution) and a small residual upscaler are trained to predict the difference between a
# bicubic upscale and the high-resolution image.
#
# We train it twice, with an **L1** loss and with the **perceptual** loss (ResNet18 features
# after 3 and 6 children + 0.01 L1), then compare both with classic upscales and with the other
# notebook's model on photos none of them saw.
#
# Everything shared with the other notebook comes from `srlib/`, and every code cell except the
# configuration is the same in both notebooks (one source, `notebooks/upscale.py`, makes both; a
# test checks it). Cells marked *Look inside* open up one idea on one crop (the residual head,
# the loss's parts, one training step); they change nothing the training runs use. Run it top
# to bottom (at most 10 minutes on a 2-core CPU without AVX-512, with the default `quick`
# preset), or headless: `jupyter execute upscale_resnet.ipynb`. On a GPU (Colab: the badge
# above) the `gpu` preset is picked by itself. The stop button ends training cleanly: a
# checkpoint is written, the run resumes when the cell runs again, and the later cells use the
# model as it is.

# %%
import os
import subprocess
import sys

if "google.colab" in sys.modules and not os.path.isfile("pyproject.toml"):
    if not os.path.isdir("srlib"):
        subprocess.run(
            ["git", "clone", "--depth", "1", "https://github.com/srlib-project/srlib"], check=True
        )
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "srlib"], check=True)
    os.chdir("srlib")  # checkpoints/, runs/ and images/ are relative to the repository

# %% [markdown]
# ## Configuration
#
# One typed `TrainConfig` (see `srlib/training/config.py`); presets fill it and any field can be
# overridden here. This is the only code cell that differs between the two notebooks.

# %% tags=["unet"]
import copy
import os
from dataclasses import replace
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from srlib import data, infer, metrics, plots, resize
from srlib.losses import make_loss
from srlib.models import UNetUpscaler as Model  # this notebook's model
from srlib.training import (
    default_preset,
    fit,
    load_model,
    model_args,
    preset,
    restore_best,
    run_or_shipped,
    seed_everything,
)

# Everything that differs between the two notebooks is in this cell.
# runs/<KIND>_*, checkpoints/<SHIPPED>*; OTHER: the other notebook's, compared at the end
KIND, LABEL, SHIPPED = "unet", "UNet", "unet"
OTHER = ("resnet", "ResNet-UNet", "resnet_unet")

# "quick": a CPU, each notebook in at most 10 minutes; "gpu": one GPU (Colab), about 15 minutes,
# picked when CUDA is available; "full": a GPU, the seed's scale; "smoke": seconds (tests).
PRESET = os.environ.get("SRLIB_PRESET") or default_preset()
# Photos: data/valued (downloaded Commons photos, see README) or any folder with an images/
# subfolder; the embedded photos when it has none.
DATA_DIR = os.environ.get("SRLIB_DATA", "data/valued")
# A benchmark folder to evaluate on as well, e.g. "../shared/datasets/Set5" (off by default:
# benchmark sets cannot ship with the repository).
BENCHMARK = os.environ.get("SRLIB_BENCHMARK")
# Always held out when present: chelsea (fur: where upscalers differ) is the hero photo.
HELD_OUT = ("chelsea", "moon")
# Runs, figures and exported models go under runs/ (out_dir). Only SRLIB_SAVE=1 refreshes the
# repository's images/ and checkpoints/ (and only with models that pass the floor below).
SAVE = os.environ.get("SRLIB_SAVE") == "1"
FLOOR_DB = {"l1": 0.5, "perceptual": 0.0}  # held-out PSNR-Y gain over bicubic a model must beat

cfg = preset(PRESET, name=KIND, scale=2, out_dir=os.environ.get("SRLIB_OUT_DIR", "runs"))
FIGURES = Path(cfg.out_dir) / cfg.name / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
cfg

# %% tags=["resnet"]
import copy
import os
from dataclasses import replace
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from srlib import data, infer, metrics, plots, resize
from srlib.losses import make_loss
from srlib.models import ResNetUNetUpscaler as Model  # this notebook's model
from srlib.training import (
    default_preset,
    fit,
    load_model,
    model_args,
    preset,
    restore_best,
    run_or_shipped,
    seed_everything,
)

# Everything that differs between the two notebooks is in this cell.
# runs/<KIND>_*, checkpoints/<SHIPPED>*; OTHER: the other notebook's, compared at the end
KIND, LABEL, SHIPPED = "resnet", "ResNet-UNet", "resnet_unet"
OTHER = ("unet", "UNet", "unet")

# "quick": a CPU, each notebook in at most 10 minutes; "gpu": one GPU (Colab), about 15 minutes,
# picked when CUDA is available; "full": a GPU, the seed's scale; "smoke": seconds (tests).
PRESET = os.environ.get("SRLIB_PRESET") or default_preset()
# Photos: data/valued (downloaded Commons photos, see README) or any folder with an images/
# subfolder; the embedded photos when it has none.
DATA_DIR = os.environ.get("SRLIB_DATA", "data/valued")
# A benchmark folder to evaluate on as well, e.g. "../shared/datasets/Set5" (off by default:
# benchmark sets cannot ship with the repository).
BENCHMARK = os.environ.get("SRLIB_BENCHMARK")
# Always held out when present: chelsea (fur: where upscalers differ) is the hero photo.
HELD_OUT = ("chelsea", "moon")
# Runs, figures and exported models go under runs/ (out_dir). Only SRLIB_SAVE=1 refreshes the
# repository's images/ and checkpoints/ (and only with models that pass the floor below).
SAVE = os.environ.get("SRLIB_SAVE") == "1"
FLOOR_DB = {"l1": 0.5, "perceptual": 0.0}  # held-out PSNR-Y gain over bicubic a model must beat

cfg = preset(PRESET, name=KIND, scale=2, out_dir=os.environ.get("SRLIB_OUT_DIR", "runs"))
FIGURES = Path(cfg.out_dir) / cfg.name / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
cfg

# %% [markdown]
# ## Data
#
# Downloaded Wikimedia Commons photos when `data/valued/images/` has any (see
# `data/valued/README.md`), otherwise the photos embedded in scikit-image, scikit-learn and
# matplotlib. Training `lq` is torch's antialiased downscale of `gt`; the final table's LR is
# MATLAB's `imresize`, as in published tables (`srlib/resize.py` names every kernel).

# %%
sources, about = data.default_sources(DATA_DIR)
print(about)
# Split by image, never by crop. Held-out photos (the final table, the figures) are never
# trained on and never pick a checkpoint; validation photos pick each run's best checkpoint.
rest, test_src = data.split_by_image(sources, 0.25, seed=cfg.seed, holdout=HELD_OUT)
train_src, val_src = data.split_by_image(rest, 0.15, seed=cfg.seed)
print("train:     ", ", ".join(data.source_name(s) for s in train_src))
print("validation:", ", ".join(data.source_name(s) for s in val_src))
print("held out:  ", ", ".join(data.source_name(s) for s in test_src))
held_names = [data.source_name(s) for s in test_src]
HERO = next((n for n in HELD_OUT if n in held_names), held_names[0])  # shown large at the end
hero = test_src[held_names.index(HERO)]

crop_args = dict(
    size=cfg.patch_size, scale=cfg.scale, min_crop=cfg.min_crop, method=cfg.downscale, seed=cfg.seed
)
train_set = data.SRDataset(train_src, crops_per_image=cfg.crops_per_image, **crop_args)
val_set = data.SRDataset(val_src, crops_per_image=16, train=False, **crop_args)
print(f"{len(train_set)} training crops per epoch, {len(val_set)} fixed validation crops")
print(f"lq for training and figures: {resize.degrade_label(cfg.downscale)} downscale of gt")
fig = plots.preview_pairs(train_set, title="training pairs: random crops of random size, rescaled")

# %% [markdown] tags=["unet"]
# ## Model
#
# A plain UNet, all parameters trainable.

# %% [markdown] tags=["resnet"]
# ## Model
#
# The encoder is frozen; only the decoder and the head train. Without ImageNet weights the
# encoder is random, and the output below says so. The frozen features reach the decoder scaled
# by `feature_scale` (0.1): at full scale Adam's first steps were ~100x larger than in the plain
# UNet and most runs collapsed to the bicubic base (README, *Training that never silently
# fails*).

# %%
# The preset's size of the model: on a GPU the deep UNet (srlib.training.config.PRESET_MODEL_ARGS).
make_model = partial(Model, scale=cfg.scale, **model_args(PRESET, Model))
model = make_model()
trainable, total = model.num_params(), model.num_params(trainable_only=False)
print(
    f"{Model.__name__} x{cfg.scale}: {trainable:,} trainable parameters, "
    f"{total - trainable:,} frozen"
)
print(model.config)

# %% [markdown]
# **Look inside: the residual head.** One validation crop through the model, step by step, as
# `Upscaler.forward` runs it. The encoder and decoder work at LR resolution; the head's one conv
# makes 3·s² values per LR pixel (an s×s block of RGB residuals), `PixelShuffle` lays each block
# out at HR, and the result is added to a bicubic upscale of lq: the network learns only what
# bicubic gets wrong.

# %% tags=["look-inside"]
lq, gt = (t[None] for t in val_set[0])  # one validation crop, a batch of one
with torch.no_grad():  # nothing trains here
    feats = model.decoder(model.encoder(lq))  # (1, C, h, w): features, still at LR
    conv, shuffle = model.head.up  # the head: a 3x3 conv, then PixelShuffle(s)
    res_lr = conv(feats)  # (1, 3 * s^2, h, w): an s x s block of RGB residuals per LR pixel
    res = shuffle(res_lr)  # (1, 3, s*h, s*w): each block laid out at HR
    base = model.base_upscale(lq)  # (1, 3, s*h, s*w): torch's bicubic upscale of lq
    sr = base + res  # (1, 3, s*h, s*w)
    same = torch.equal(sr, model(lq))
names = ["lq", "features", "conv", "PixelShuffle", "+ bicubic base", "= sr"]
for name, t in zip(names, [lq, feats, res_lr, res, base, sr], strict=True):
    print(f"{name:>14}: {tuple(t.shape)}")
print(f"sr == model(lq): {same}; largest |residual|: {res.abs().max():.0f}")
print("(the head's conv starts at zero: untrained, the model is its bicubic base)")

# %% [markdown]
# ## Loss
#
# L1 compares pixels. The perceptual loss compares what a frozen ImageNet ResNet18 sees in sr and
# gt (its features after 3 and 6 children), plus 0.01 L1 that keeps the colours in place.

# %%
# The perceptual loss (and, in the ResNet model, the encoder) need ImageNet ResNet18 weights.
perceptual = make_loss("perceptual")
WEIGHTS = (
    "ImageNet ResNet18 weights"
    if perceptual.has_imagenet_weights
    else "NO ImageNet weights: ResNet18 parts are RANDOM"
)
print(("" if perceptual.has_imagenet_weights else "WARNING: ") + WEIGHTS)

# %% [markdown]
# **Look inside: the perceptual loss.** Its parts on the crop above, sr (so far the bicubic base)
# against gt: each term's L1, its weight, and its share of the total.

# %% tags=["look-inside"]
with torch.no_grad():
    loss, parts = perceptual(sr, gt)  # the weighted sum, and each term unweighted
    taps = perceptual.features(sr)  # {3: (1, 64, H/2, W/2), 6: (1, 128, H/8, W/8)}
for name, weight in perceptual.weights.items():  # {"feat3": 1.0, "feat6": 1.0, "pixel": 0.01}
    x = sr if name == "pixel" else taps[int(name[4:])]  # what the term compares with gt's
    share = weight * parts[name] / loss
    print(f"{name}: L1 {parts[name]:.4f} x {weight} = {share:.1%} of the loss, on {tuple(x.shape)}")
print(f"total: {loss:.4f}")

# %% [markdown]
# ## Training
#
# The same model trained with L1 and with the perceptual loss, for a fixed number of steps (the
# same numbers on every run of this machine). `fit` checkpoints atomically to `runs/`, resumes if
# interrupted, and says so loudly when a run learns nothing (validation PSNR not above its own
# bicubic base).
#
# **Look inside: one training step.** What `fit` does for every batch, written out on a
# throwaway copy of the model: forward, loss, backward, optimiser step. Around it `fit` adds the
# LR warmup and decay, gradient clipping, bf16 autocast where it pays, validation and
# checkpoints. Each run below starts from `seed_everything` and a new model: this step changes
# none of them. It takes `fit`'s first LR, the first of its warmup (`cfg.lr / cfg.warmup_steps`),
# so the loss on the batch moves only a little. Note which weights get a gradient in a first step:
# only the head's last conv. It starts at zero, so no gradient reaches the layers before it until
# it has moved.

# %% tags=["look-inside"]
scratch = copy.deepcopy(model).train()  # throwaway: the runs below build their own
params = [p for p in scratch.parameters() if p.requires_grad]  # not the frozen encoder's
# AdamW as fit makes it, at the LR of fit's first step (the first of its warmup)
opt = torch.optim.AdamW(params, lr=cfg.lr / cfg.warmup_steps, weight_decay=cfg.weight_decay)
lq, gt = next(iter(data.make_loader(train_set, cfg.batch_size, seed=cfg.seed)))  # fit's 1st batch
l1 = make_loss("l1")
sr = scratch(lq)  # forward: (B, 3, h, w) -> (B, 3, s*h, s*w)
loss, parts = l1(sr, gt)  # the loss, and its parts for the curves ({"l1": ...})
opt.zero_grad()
loss.backward()  # backward: d loss / d weight for every trainable weight
graded = [n for n, p in scratch.named_parameters() if p.grad is not None and p.grad.any()]
opt.step()  # AdamW moves each weight by about lr, against its gradient
with torch.no_grad():
    after = l1(scratch(lq), gt)[0]
print(f"L1 on this batch: {loss:.6f}, after the step {after:.6f} ({after - loss:+.1e})")
print(f"non-zero gradients: {graded}")

# %%
models, histories = {}, {}
# One figure of loss curves, redrawn in this cell's output every 2 validations while training.
live = plots.LiveLosses(title=f"{LABEL} x{cfg.scale} ({WEIGHTS})")
for loss_name in ("l1", "perceptual"):
    run = replace(cfg, name=f"{KIND}_{loss_name}", loss=loss_name)
    seed_everything(run.seed)  # the same initial weights on every run
    net = make_model()
    h = fit(
        net, make_loss(loss_name), train_set, val_set, run, on_validation=partial(live, loss_name)
    )
    models[loss_name], histories[loss_name] = net, h
    if h["interrupted"]:  # the stop button: keep this model as it is, skip the other runs
        print(f"{run.name}: stopped after {len(h['step'])} steps; the cells below use it as is")
        break
    best_step = restore_best(models[loss_name], run)  # early stopping on the validation photos
    best = max(h["val"]["psnr"])
    print(
        f"{run.name}: {h['step'][-1]} steps in {h['train_seconds']:.0f} s, "
        f"{h['samples_per_s']:.1f} samples/s; kept step {best_step}: val PSNR {best:.2f} dB "
        f"({best - h['val']['base_psnr']:+.2f} dB over its bicubic base)"
    )
    for a in h["alerts"]:  # fit() printed these loudly too; repeat them where the results are
        print("!!!", a["message"])
# %% [markdown]
# ## Loss curves
#
# Total loss (linear and log) and every loss part, raw (faint) with a moving average over it,
# and validation PSNR with each run's bicubic base as a dotted line.

# %%
fig = plots.plot_losses(histories, title=f"{LABEL} x{cfg.scale}, preset {PRESET} ({WEIGHTS})")
for folder in [FIGURES] + ([Path("images")] if SAVE else []):
    fig.savefig(folder / f"{KIND}_loss_curves.png", dpi=80)

# %% [markdown]
# ## Upscales of held-out photos
#
# Per model: the input, its base (bicubic) upscale, the prediction, the ground truth, the raw
# residual the model adds, and the residual it should add.

# %%
# Full held-out photos, degraded the way training pairs are. Residuals are shown around grey.
for src in sorted(test_src, key=lambda s: data.source_name(s) != HERO)[:2]:  # hero first
    gt = resize.mod_crop(data.source_tensor(src), cfg.scale)[None]  # (1, 3, H, W)
    lq = resize.degrade(gt, cfg.scale, cfg.downscale)  # (1, 3, H/s, W/s)
    named = {f"{LABEL} ({k})": m for k, m in models.items()}
    plots.comparison_grid(named, lq, gt, title=f"{data.source_name(src)} x{cfg.scale} ({WEIGHTS})")
    plt.show()

# %% [markdown]
# ## x4 by two x2 passes

# %%
# x4 by applying the x2 models twice, next to torch's bicubic x4 (the models' base kernel).
gt = resize.mod_crop(data.source_tensor(hero), 4)[None]  # (1, 3, H, W)
lq4 = resize.degrade(gt, 4, cfg.downscale)  # (1, 3, H/4, W/4)
x4 = {
    "lq (nearest)": plots.upsample_nearest(lq4, gt.shape[-2:]),
    "bicubic (torch) x4": resize.torch_bicubic(lq4, 4).clamp(0, 1),
}
for k, m in models.items():
    x4[f"{LABEL} ({k}) x2 twice"] = infer.upscale_tensor(m, lq4, scale=4)
x4["ground truth"] = gt
fig = plots.side_by_side(x4, title=f"{HERO}: x4 as two x2 passes ({WEIGHTS})")

# %% [markdown]
# ## Comparison
#
# Both architectures side by side: this notebook's two models and the other notebook's (its
# latest finished run here, else the shipped checkpoint).

# %%
# The other notebook's model: its latest finished run under runs/, else the checkpoint the
# repository ships. Where each one comes from is printed.
other_kind, other_label, other_shipped = OTHER
others = {}
for k in ("l1", "perceptual"):
    shipped = Path("checkpoints") / f"{other_shipped}{'' if k == 'l1' else '_' + k}_x{cfg.scale}.pt"
    try:
        path, provenance = run_or_shipped(
            Path(cfg.out_dir) / f"{other_kind}_{k}", shipped, expect={"scale": cfg.scale}
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"{other_label} ({k}) not compared: {e}")
        continue
    others[f"{other_label} ({k})"] = load_model(path)[0]
    print(f"{other_label} ({k}) from {provenance}")
compared = {**{f"{LABEL} ({k})": m for k, m in models.items()}, **others}

# %% [markdown]
# On held-out photos (and on a benchmark folder if `SRLIB_BENCHMARK` points at one,
# e.g. `../shared/datasets/Set5`; published rows are labelled). Every model is then judged against
# bicubic: L1 models must gain at least 0.5 dB, perceptual ones more than 0 (`benchmarks/seeds.py`
# checks this over 5 seeds).

# %%
# PSNR / SSIM on the Y channel (BT.601, `scale` px border cropped, 8-bit), as published tables do,
# with LR made by MATLAB's imresize; "bicubic (torch)" is the models' own base upscale.
# "detail" = high-frequency energy of sr / gt (1 = as much fine detail as the original).
heldout = data.save_sources(test_src, Path(cfg.out_dir) / "heldout")
folders = {"held-out photos": heldout}
if BENCHMARK:
    folders[Path(BENCHMARK).name] = BENCHMARK
rows = []
for set_name, folder in folders.items():
    rows += [
        metrics.summary_row(metrics.evaluate(b, folder, cfg.scale), dataset=set_name)
        for b in ("bilinear (MATLAB)", "bicubic (MATLAB)", "bicubic (torch)")
    ]
    rows += [
        metrics.summary_row(metrics.evaluate(m, folder, cfg.scale), dataset=set_name, method=name)
        for name, m in compared.items()
    ]
    rows += metrics.published(dataset=Path(folder).name, scale=cfg.scale)
columns = ["method", "dataset", "psnr_y", "ssim_y", "psnr_rgb", "detail", "lpips"]
print(metrics.format_table(rows, columns))
print(metrics.lpips_status()[1])
# Every model is judged against bicubic, not just the best one: a run that learned nothing
# must not hide behind a good one.
held = {r["method"]: r["psnr_y"] for r in rows if r["dataset"] == "held-out photos"}
BICUBIC = "bicubic (MATLAB)"  # the published tables' baseline
gains = {name: held[name] - held[BICUBIC] for name in compared}
for name, gain in gains.items():
    ok = gain > FLOOR_DB["l1" if "(l1)" in name else "perceptual"]
    verdict = "beats" if gain > 0 else "does NOT beat"
    floor = "" if ok else ", BELOW its floor"
    print(
        f"{'' if ok else '!!! '}{name}: {held[name]:.2f} dB, {gain:+.2f} dB over {BICUBIC} "
        f"({held[BICUBIC]:.2f}) -> {verdict} bicubic{floor}"
    )

# %%
# The hero photo, x2, every model. Drag the slider (live sessions) to compare bicubic with
# this notebook's L1 model; the figure below it shows all of them with the same zoomed inset.
hero_gt = resize.mod_crop(data.source_tensor(hero), cfg.scale)[None]  # (1, 3, H, W)
hero_lq = resize.degrade(hero_gt, cfg.scale, cfg.downscale)  # (1, 3, H/2, W/2)
hero_sr = {name: infer.upscale_tensor(m, hero_lq) for name, m in compared.items()}
base_name = models["l1"].base_label  # "bicubic (torch)": the kernel the models build on
base = models["l1"].base_upscale(hero_lq).clamp(0, 1)
plots.before_after(
    base,
    hero_sr[f"{LABEL} (l1)"],
    (base_name, f"{LABEL} (l1)"),
    title=f"{HERO} (held out) x{cfg.scale}",
)
fig = plots.side_by_side(
    {base_name: base, **hero_sr, "ground truth": hero_gt},
    ncols=3,
    title=f"{HERO} (held out) x{cfg.scale}: bicubic vs learned ({WEIGHTS})",
)
for folder in [FIGURES] + ([Path("images")] if SAVE else []):
    fig.savefig(folder / f"{KIND}_hero.png", dpi=110)

# %%
# Small fp16 models of this run go to runs/; SRLIB_SAVE=1 also refreshes the repository's
# checkpoints/, with the models that pass the floor only.
results = {r["method"]: r for r in rows if r["dataset"] == "held-out photos"}
for k in histories:
    name = f"{SHIPPED}{'' if k == 'l1' else '_' + k}_x{cfg.scale}.pt"
    if histories[k]["interrupted"]:
        print(f"not exporting {name}: its run was interrupted")
        continue
    best_ckpt = Path(cfg.out_dir) / f"{KIND}_{k}" / "best.pt"
    targets = [Path(cfg.out_dir) / cfg.name / "export" / name]
    if SAVE and gains[f"{LABEL} ({k})"] > FLOOR_DB[k]:
        targets.append(Path("checkpoints") / name)
    elif SAVE:
        print(f"!!! not shipping {name}: {gains[f'{LABEL} ({k})']:+.2f} dB is below the floor")
    for target in targets:
        infer.export_checkpoint(best_ckpt, target, metrics=results[f"{LABEL} ({k})"])
        print("saved", target)
