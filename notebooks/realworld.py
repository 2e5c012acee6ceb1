# %% [markdown]
# # Upscaling real-world photos: realistic degradations and a GAN
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/srlib-project/srlib/blob/main/upscale_realworld.ipynb)
#
# The other two notebooks train on clean downscales, and a model trained that way can do
# worse than plain bicubic on a JPEG-compressed or noisy photo (the table at the end measures
# it). Here the UNet of `upscale_unet.ipynb` trains on **realistic** lq instead: blur, resizes,
# noise and JPEG in one or two random passes (`srlib/degrade.py`, after Real-ESRGAN). A short
# **GAN** fine-tune then trades a little PSNR for texture. Both are compared with bicubic and
# with the clean UNet on a real JPEG of a held-out photo, and on the held-out photos under
# each condition of `srlib.metrics.CONDITIONS` (clean, JPEG at quality 90 to 30, Gaussian noise).
#
# Everything shared comes from `srlib/`; this notebook is built from `notebooks/realworld.py`. Run
# it top to bottom (at most 10 minutes on a 2-core CPU without AVX-512, with the default `quick`
# preset; on a GPU the `gpu` preset is picked by itself), or headless:
# `jupyter execute upscale_realworld.ipynb`. Nothing here needs ImageNet weights.
# `benchmarks/realworld.py` makes the same table on Set5 and Set14.

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
# The preset's `TrainConfig` with realistic degradations, and the GAN fine-tune's discriminator
# and steps.

# %%
import os
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from srlib import data, degrade, infer, metrics, plots, resize
from srlib.io import save_image
from srlib.models import UNetUpscaler as Model  # the UNet notebook's model, default arguments
from srlib.training import (
    default_preset,
    fit,
    load_model,
    loss_for,
    model_args,
    preset,
    restore_best,
    run_or_shipped,
    seed_everything,
)

# runs/<KIND>*, checkpoints/<SHIPPED>*. CLEAN_*: the UNet notebook's model, trained on clean lq
# only (its runs/<kind>_l1, else checkpoints/<shipped>_x2.pt), compared at the end.
KIND, LABEL, SHIPPED = "real", "UNet", "unet_real"
CLEAN_KIND, CLEAN_SHIPPED = "unet", "unet"

# "quick": a CPU, each notebook in at most 10 minutes; "gpu": one GPU (Colab), about 15 minutes,
# picked when CUDA is available; "full": a GPU, the seed's scale; "smoke": seconds (tests).
PRESET = os.environ.get("SRLIB_PRESET") or default_preset()
# Photos: data/valued (downloaded Commons photos, see README) or any folder with an images/
# subfolder; the embedded photos when it has none.
DATA_DIR = os.environ.get("SRLIB_DATA", "data/valued")
# Always held out when present: chelsea (fur: where upscalers differ) is the hero photo.
HELD_OUT = ("chelsea", "moon")
# Runs, figures and exported models go under runs/ (out_dir). Only SRLIB_SAVE=1 refreshes the
# repository's images/ and checkpoints/ (and only with models that beat bicubic, see the end).
SAVE = os.environ.get("SRLIB_SAVE") == "1"

# Training lq: srlib.degrade's realistic degradations (blur, resize, noise, JPEG).
cfg = preset(
    PRESET,
    name=KIND,
    scale=2,
    out_dir=os.environ.get("SRLIB_OUT_DIR", "runs"),
    degradation="realistic",
)
# The GAN fine-tune's discriminator and steps. "patch" costs ~1.3x a plain training step on a
# CPU, "unet" (Real-ESRGAN's) ~6.7x: too slow for the quick preset, worth a try on a GPU.
GAN_D = "patch"
GAN_STEPS = {"smoke": 2, "quick": 400, "gpu": 1000, "full": 2000}[PRESET]
FIGURES = Path(cfg.out_dir) / cfg.name / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
cfg

# %% [markdown]
# ## Data
#
# The photos and the split of the other two notebooks: the held-out photos are never trained
# on. Each training lq is drawn by `srlib.degrade`: blur, a resize with a random kernel,
# Gaussian or Poisson noise and JPEG, in one or two passes; one in ten stays clean, so the
# model still works on clean input.

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

# Validation lq is realistic too (the same draws on every run): each run keeps the checkpoint
# that is best on the inputs it is for.
crop_args = dict(
    size=cfg.patch_size,
    scale=cfg.scale,
    min_crop=cfg.min_crop,
    method=cfg.downscale,
    seed=cfg.seed,
    degradation=cfg.degradation,
)
train_set = data.SRDataset(train_src, crops_per_image=cfg.crops_per_image, **crop_args)
val_set = data.SRDataset(val_src, crops_per_image=16, train=False, **crop_args)
print(f"{len(train_set)} training crops per epoch, {len(val_set)} fixed validation crops")
fig = plots.preview_pairs(
    train_set, title="training pairs: realistic lq (blur, noise, JPEG) over gt"
)

# %% [markdown]
# One crop, clean and realistic: every draw picks its own blur, kernels, noise and JPEG quality,
# so the model never sees the same damage twice.

# %%
# One training crop: its clean lq (what the UNet notebook trains on) and four draws of the
# realistic degradation, all shown at gt size (nearest), so the pixels a model gets are visible.
gt = train_set[0][1]  # (3, S, S)
lqs = {"clean lq": resize.degrade(gt, cfg.scale, cfg.downscale)}
for i in range(4):
    rng = np.random.default_rng(i)
    lqs[f"realistic lq, draw {i + 1}"] = degrade.realistic_lq(
        gt, cfg.scale, degrade.Realistic(), rng
    )
panels = {k: plots.upsample_nearest(lq[None], gt.shape[-2:]) for k, lq in lqs.items()}
fig = plots.side_by_side(
    {"ground truth": gt, **panels},
    ncols=3,
    title="one crop: clean vs realistic lq (nearest, at gt size)",
)

# %% [markdown]
# ## Model
#
# The UNet notebook's model, the preset's size, from scratch.

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
# ## Training
#
# First L1 on realistic lq, for the preset's steps. Then a short GAN fine-tune from its best
# checkpoint: a patch discriminator learns to tell sr from gt, and the generator's loss rewards
# fooling it. Each run prints its time per step; `fit` checkpoints to `runs/` and resumes,
# as in the other notebooks.

# %%
models, histories, ms_per_step = {}, {}, {}
NAMES = {"l1": f"{LABEL} realistic (L1)", "gan": f"{LABEL} realistic + GAN"}
runs = {
    "l1": replace(cfg, name=f"{KIND}_l1", loss="l1"),
    # From the L1 run's best weights: L1 + gan_weight (0.1, as Real-ESRGAN) x the adversarial
    # loss. Not the perceptual loss: its ResNet18 wants ImageNet weights (random without them)
    # and costs ~1.6x a step on a CPU. L1 keeps content and colour in place, the discriminator
    # asks for texture. lr 10x lower: it starts from a trained model. EMA decay 0.99 (an
    # average over ~100 steps): at 0.999 it would span more steps than the run has and stay
    # mostly the L1 model's weights.
    "gan": replace(
        cfg,
        name=f"{KIND}_gan",
        loss="l1",
        gan=GAN_D,
        steps=GAN_STEPS,
        lr=2e-4,
        ema=0.99,
        val_every=max(1, GAN_STEPS // 4),
        init_from=str(Path(cfg.out_dir) / f"{KIND}_l1" / "best.pt"),
    ),
}
# One figure of loss curves, redrawn in this cell's output every 2 validations while training.
live = plots.LiveLosses(title=f"{LABEL} x{cfg.scale} on realistic lq")
for k, run in runs.items():
    seed_everything(run.seed)  # the same initial weights on every run
    net = make_model()
    h = fit(net, loss_for(run), train_set, val_set, run, on_validation=partial(live, NAMES[k]))
    models[k], histories[k] = net, h
    if h["interrupted"]:  # the stop button: keep this model as it is, skip the GAN run
        print(f"{run.name}: stopped after {len(h['step'])} steps; the cells below use it as is")
        break
    # The L1 run is judged by its best validation checkpoint. The GAN run is kept as it ends:
    # picking it by PSNR would pick the snapshot the GAN changed least.
    kept = restore_best(net, run) if k == "l1" else h["step"][-1]
    val = max(h["val"]["psnr"]) if k == "l1" else h["val"]["psnr"][-1]
    ms_per_step[k] = 1000 * h["train_seconds"] / len(h["step"])
    ratio = f", {ms_per_step[k] / ms_per_step['l1']:.2f}x an L1 step" if k != "l1" else ""
    print(
        f"{run.name}: {h['step'][-1]} steps in {h['train_seconds']:.0f} s "
        f"({ms_per_step[k]:.0f} ms/step{ratio}); kept step {kept}: val PSNR {val:.2f} dB "
        f"({val - h['val']['base_psnr']:+.2f} dB over its bicubic base)"
    )
    for a in h["alerts"]:  # fit() printed these loudly too; repeat them where the results are
        print("!!!", a["message"])

# %% [markdown]
# ## Loss curves
#
# Both runs, raw (faint) with a moving average; the GAN run adds `g_adv`, `d_real` and `d_fake`,
# with ln 2 (a discriminator at chance) dotted.

# %%
# The GAN run's parts: g_adv (the generator fooling the discriminator), d_real and d_fake (the
# discriminator's BCEs on gt and on sr); at ln 2 = 0.69 the discriminator cannot tell them apart.
named = {NAMES[k]: h for k, h in histories.items()}
fig = plots.plot_losses(named, title=f"{LABEL} x{cfg.scale} on realistic lq, preset {PRESET}")
for folder in [FIGURES] + ([Path("images")] if SAVE else []):
    fig.savefig(folder / f"{KIND}_loss_curves.png", dpi=80)

# %% [markdown]
# ## The clean model
#
# For comparison: the UNet notebook's model, trained on clean lq.

# %%
# The UNet notebook's latest finished run under runs/, else the checkpoint the repository
# ships; where it comes from is printed. Its architecture may differ from this notebook's UNet:
# it is compared as it is, a model trained on clean lq only.
clean_name = f"{LABEL} clean (L1)"
compared = {}
shipped = Path("checkpoints") / f"{CLEAN_SHIPPED}_x{cfg.scale}.pt"
try:
    path, provenance = run_or_shipped(
        Path(cfg.out_dir) / f"{CLEAN_KIND}_l1", shipped, expect={"scale": cfg.scale}
    )
    compared[clean_name] = load_model(path)[0]
    print(f"{clean_name} from {provenance}\n{compared[clean_name].config}")
except (FileNotFoundError, ValueError) as e:
    print(f"{clean_name} not compared: {e}")
compared.update({NAMES[k]: m for k, m in models.items()})

# %% [markdown]
# ## A real JPEG
#
# The hero photo downscaled x2, saved as a quality-50 JPEG and read back, then upscaled by
# bicubic (MATLAB's kernel) and by each model. Every panel has the same zoomed inset; titles
# give PSNR-Y against the ground truth.

# %%
# The hero photo downscaled x2 as the benchmarks are (MATLAB's bicubic), saved as a quality-50
# JPEG file (PIL, 4:2:0 chroma, as the table's jpeg50) and decoded: what a user's upscaler gets.
hero_gt = resize.mod_crop(data.source_tensor(hero), cfg.scale)[None]  # (1, 3, H, W)
hero_lq = resize.make_lq(hero_gt, cfg.scale)  # (1, 3, H/2, W/2), 8-bit levels
jpeg_path = Path(cfg.out_dir) / cfg.name / f"{HERO}_x{cfg.scale}_q50.jpg"
save_image(
    Image.fromarray((plots.to_numpy(hero_lq) * 255).round().astype(np.uint8)),
    jpeg_path,
    fmt="jpg",
    quality=50,
)
hero_jpeg = data.source_tensor(jpeg_path)[None]  # (1, 3, H/2, W/2)
print(f"{jpeg_path}: {jpeg_path.stat().st_size / 1024:.0f} KiB")
upscales = {"bicubic (MATLAB)": resize.matlab_bicubic(hero_jpeg, cfg.scale).clamp(0, 1)}
# fp32: the PSNRs below must not depend on the CPU ("auto" is bf16 where it is native).
upscales.update(
    {name: infer.upscale_tensor(m, hero_jpeg, precision="fp32") for name, m in compared.items()}
)
if clean_name in upscales:  # drag the slider (live sessions): clean vs realistic training
    plots.before_after(
        upscales[clean_name],
        upscales[NAMES["l1"]],
        (clean_name, NAMES["l1"]),
        title=f"{HERO} (held out) x{cfg.scale} from a quality-50 JPEG",
    )
panels = {"JPEG q50 (nearest)": plots.upsample_nearest(hero_jpeg, hero_gt.shape[-2:])}
for name, sr in upscales.items():
    panels[f"{name}: {metrics.psnr_y(sr, hero_gt, cfg.scale):.2f} dB"] = sr  # PSNR-Y
panels["ground truth"] = hero_gt
fig = plots.side_by_side(
    panels, ncols=3, title=f"{HERO} (held out) x{cfg.scale} from a quality-50 JPEG"
)
for folder in [FIGURES] + ([Path("images")] if SAVE else []):
    fig.savefig(folder / f"{KIND}_jpeg_hero.png", dpi=110)

# %% [markdown]
# ## Degraded benchmark
#
# The held-out photos under each condition of `metrics.CONDITIONS`: the LR clean, re-encoded
# as JPEG at quality 90 to 30, or with Gaussian noise of sigma 5 or 15 (in 0-255 units). Each
# model is compared with bicubic on the same LR; a line starting with `!!!` names every model
# and condition where it loses.

# %%
# The held-out photos as a benchmark folder, as Set5 is one: HR mod-cropped to the scale, LR
# made from it by MATLAB's bicubic. metrics.degraded_benchmark copies it per condition with the
# LR JPEG-compressed or noisy (HR untouched), cached under runs/.
bench = Path(cfg.out_dir) / cfg.name / "heldout"
pairs = bench / f"image_SRF_{cfg.scale}"
pairs.mkdir(parents=True, exist_ok=True)
for stale in pairs.glob("*_SRF_*.png"):  # an earlier split's photos must not be scored too
    stale.unlink()
for src in test_src:
    hr = resize.mod_crop(data.source_tensor(src), cfg.scale)[None]  # (1, 3, H, W)
    for part, img in (("HR", hr), ("LR", resize.make_lq(hr, cfg.scale))):
        rgb = (plots.to_numpy(img) * 255).round().astype(np.uint8)
        save_image(
            Image.fromarray(rgb), pairs / f"{data.source_name(src)}_SRF_{cfg.scale}_{part}.png"
        )
# PSNR / SSIM on Y (BT.601, `scale` px border cropped), detail = high-frequency energy of
# sr / gt; every model against bicubic (MATLAB) on the same degraded LR.
BICUBIC = "bicubic (MATLAB)"
rows, gains = [], {}
for cond in metrics.CONDITIONS:
    folder = metrics.degraded_benchmark(
        bench, cfg.scale, cond, Path(cfg.out_dir) / cfg.name / "degraded"
    )
    base = metrics.summary_row(metrics.evaluate(BICUBIC, folder, cfg.scale), condition=cond)
    rows.append({**base, "gain vs bicubic": "-"})
    for name, m in compared.items():
        row = metrics.summary_row(
            metrics.evaluate(m, folder, cfg.scale), method=name, condition=cond
        )
        gains[name, cond] = row["psnr_y"] - base["psnr_y"]
        rows.append({**row, "gain vs bicubic": f"{gains[name, cond]:+.2f}"})
lpips = ["lpips"] if metrics.lpips_status()[0] else []
columns = ["condition", "method", "psnr_y", "ssim_y", "detail", *lpips, "gain vs bicubic"]
print(f"held-out photos ({', '.join(held_names)}), x{cfg.scale}:")
print(metrics.format_table(rows, columns))
print(metrics.lpips_status()[1])
# Every model under every condition: a model that loses to bicubic somewhere is named there.
losing = [(name, cond) for (name, cond), gain in gains.items() if gain <= 0]
for name, cond in losing:
    print(f"!!! {name} does NOT beat bicubic at {cond}: {gains[name, cond]:+.2f} dB")
if not losing:
    print("every model beats bicubic under every condition")

# %% [markdown]
# ## Export
#
# The realistic model ships only if it beats bicubic on quality-50 JPEGs, the GAN model only
# if it beats bicubic on clean input.

# %%
# Small fp16 models of this run go to runs/. SRLIB_SAVE=1 also refreshes the repository's
# checkpoints/: the realistic model only if it beats bicubic on quality-50 JPEGs (what it is
# for), the GAN model only if it still beats bicubic on clean input.
results = {(r["method"], r["condition"]): r for r in rows}
ship_if = {"l1": "jpeg50", "gan": "clean"}
for k, h in histories.items():
    name = f"{SHIPPED}{'' if k == 'l1' else '_' + k}_x{cfg.scale}.pt"
    if h["interrupted"]:
        print(f"not exporting {name}: its run was interrupted")
        continue
    # The L1 model is its best checkpoint, the GAN model its last one (the EMA it ended with).
    ckpt = Path(cfg.out_dir) / f"{KIND}_{k}" / ("best.pt" if k == "l1" else "last.pt")
    targets = [Path(cfg.out_dir) / cfg.name / "export" / name]
    gain = gains[NAMES[k], ship_if[k]]
    if SAVE and gain > 0:
        targets.append(Path("checkpoints") / name)
    elif SAVE:
        print(
            f"!!! not shipping {name}: {gain:+.2f} dB over {BICUBIC} at {ship_if[k]}; "
            "it must beat bicubic there"
        )
    for target in targets:
        infer.export_checkpoint(ckpt, target, metrics=results[NAMES[k], ship_if[k]])
        print("saved", target)
