"""Write both notebooks from one template, so they differ only where the models differ.

    python tools/make_notebooks.py && ruff format *.ipynb
    jupyter execute --inplace upscale_unet.ipynb upscale_resnet.ipynb

Edit the cells here, not in the .ipynb files; then re-run the notebooks to refresh outputs.
"""

from pathlib import Path

import nbformat as nbf

KINDS = {
    "unet": dict(
        file="upscale_unet.ipynb",
        title="# Super-resolution with a plain UNet",
        intro=(
            "A UNet trained from scratch: a conv encoder, skip connections, a decoder of ResNet "
            "blocks at LR resolution, and a small head that pixel-shuffles to HR and predicts the "
            "difference to a bicubic upscale. Everything shared with `upscale_resnet.ipynb` comes "
            "from `srlib/`; the two notebooks differ only in the model cell.\n\n"
            "We train it twice, with an **L1** loss and with the **perceptual** loss (ResNet18 "
            "features after 3 and 6 children + 0.01 L1), then compare both with bilinear and "
            "bicubic on photos the models never saw."
        ),
        imports="from srlib.models import UNetUpscaler",
        model_md="## Model\n\nA plain UNet, all parameters trainable.",
        model=(
            "make_model = partial(UNetUpscaler, scale=cfg.scale)\n"
            "model = make_model()\n"
            'print(f"UNetUpscaler x{cfg.scale}: {model.num_params():,} trainable parameters")\n'
            "print(model.config)"
        ),
        label="UNet",
    ),
    "resnet": dict(
        file="upscale_resnet.ipynb",
        title="# Super-resolution with a frozen ResNet18 encoder",
        intro=(
            "A UNet whose encoder is the first blocks of an ImageNet ResNet18, **frozen** (no "
            "gradients, BatchNorm kept in eval mode). The decoder (ResNet blocks with skip "
            "connections, at LR resolution) and a small residual upscaler are trained to predict "
            "the difference between a bicubic upscale and the high-resolution image. Everything "
            "shared with `upscale_unet.ipynb` comes from `srlib/`; the two notebooks differ only "
            "in the model cell.\n\n"
            "We train it twice, with an **L1** loss and with the **perceptual** loss (ResNet18 "
            "features after 3 and 6 children + 0.01 L1): perceptual training gives up some PSNR "
            "for detail, and the table at the end shows both sides of that trade."
        ),
        imports="from srlib.models import ResNetUNetUpscaler",
        model_md=(
            "## Model\n\nThe encoder is frozen; only the decoder and the head train. Without "
            "ImageNet weights the encoder is random, and the output below says so. The frozen "
            "features reach the decoder scaled by `feature_scale` (0.1): at full scale Adam's "
            "first steps were ~100x larger than in the plain UNet and most runs collapsed to "
            "the bicubic base (README, *Training that never silently fails*)."
        ),
        model=(
            "make_model = partial(ResNetUNetUpscaler, scale=cfg.scale)\n"
            "model = make_model()\n"
            "trainable, total = model.num_params(), model.num_params(trainable_only=False)\n"
            'print(f"ResNetUNetUpscaler x{cfg.scale}: {trainable:,} trainable parameters "\n'
            '      f"({total - trainable:,} frozen in the encoder)")\n'
            "print(model.config)"
        ),
        label="ResNet-UNet",
    ),
}

CONFIG = """import os
from dataclasses import replace
from functools import partial
from pathlib import Path

import matplotlib.pyplot as plt

from srlib import data, infer, metrics, plots
from srlib.losses import make_loss
{imports}
from srlib.train import fit, preset, restore_best, seed_everything

# "quick": CPU, about 10 minutes; "full": GPU, the seed's scale; "smoke": seconds (tests).
PRESET = os.environ.get("SRLIB_PRESET", "quick")
# A benchmark folder to evaluate on as well, e.g. "../shared/datasets/Set5" (off by default:
# benchmark sets cannot ship with the repository).
BENCHMARK = os.environ.get("SRLIB_BENCHMARK")
HERO = "moon"  # a held-out photo shown large at the end (and in README)
# Runs, figures and exported models go under runs/ (out_dir). Only SRLIB_SAVE=1 refreshes the
# repository's images/ and checkpoints/ (and only with models that pass the floor below).
SAVE = os.environ.get("SRLIB_SAVE") == "1"
FLOOR_DB = {{"l1": 0.5, "perceptual": 0.0}}  # held-out PSNR-Y gain over bicubic a model must beat

cfg = preset(PRESET, name="{kind}", scale=2, out_dir=os.environ.get("SRLIB_OUT_DIR", "runs"))
FIGURES = Path(cfg.out_dir) / cfg.name / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
cfg"""

DATA = """sources, about = data.default_sources("data/valued")
print(about)
# Split by image, never by crop. Held-out photos (the final table, the figures) are never
# trained on and never pick a checkpoint; validation photos pick each run's best checkpoint.
rest, test_src = data.split_by_image(sources, 0.25, seed=cfg.seed, holdout=[HERO])
train_src, val_src = data.split_by_image(rest, 0.15, seed=cfg.seed)
print("train:     ", ", ".join(data.source_name(s) for s in train_src))
print("validation:", ", ".join(data.source_name(s) for s in val_src))
print("held out:  ", ", ".join(data.source_name(s) for s in test_src))

crop_args = dict(size=cfg.patch_size, scale=cfg.scale, min_crop=cfg.min_crop,
                 method=cfg.downscale, seed=cfg.seed)
train_set = data.SRDataset(train_src, crops_per_image=cfg.crops_per_image, **crop_args)
val_set = data.SRDataset(val_src, crops_per_image=16, train=False, **crop_args)
print(f"{len(train_set)} training crops per epoch, {len(val_set)} fixed validation crops")
plots.preview_pairs(train_set, title="training pairs: random crops of random size, rescaled");"""

LOSS_CHECK = """# The perceptual loss (and, in the ResNet model, the encoder) need ImageNet ResNet18 weights.
perceptual = make_loss("perceptual")
WEIGHTS = ("ImageNet ResNet18 weights" if perceptual.has_imagenet_weights
           else "NO ImageNet weights: ResNet18 parts are RANDOM")
print(("" if perceptual.has_imagenet_weights else "WARNING: ") + WEIGHTS)"""

TRAIN = """models, histories = {{}}, {{}}
for loss_name in ("l1", "perceptual"):
    run = replace(cfg, name=f"{{cfg.name}}_{{loss_name}}", loss=loss_name)
    seed_everything(run.seed)  # the same initial weights on every run
    models[loss_name] = make_model()
    histories[loss_name] = fit(models[loss_name], make_loss(loss_name), train_set, val_set, run)
    h = histories[loss_name]
    best_step = restore_best(models[loss_name], run)  # early stopping on the validation photos
    best = max(h["val"]["psnr"])
    print(f"{{run.name}}: {{h['step'][-1]}} steps in {{h['train_seconds']:.0f}} s, "
          f"{{h['samples_per_s']:.1f}} samples/s; kept step {{best_step}}: val PSNR {{best:.2f}} dB "
          f"({{best - h['val']['base_psnr']:+.2f}} dB over its bicubic base)")
    for a in h["alerts"]:  # fit() printed these loudly too; repeat them where the results are
        print("!!!", a["message"])"""

CURVES = """fig = plots.plot_losses(histories, title=f"{label} x{{cfg.scale}}, preset {{PRESET}} ({{WEIGHTS}})")
for folder in [FIGURES] + ([Path("images")] if SAVE else []):
    fig.savefig(folder / "{kind}_loss_curves.png", dpi=80)"""

SAMPLES = """# Full held-out photos, degraded the way training pairs are. Residuals are shown around grey.
for src in sorted(test_src, key=lambda s: data.source_name(s) != HERO)[:2]:  # hero first
    gt = metrics.mod_crop(data.to_tensor(src), cfg.scale)[None]  # (1, 3, H, W)
    lq = data.degrade(gt, cfg.scale, cfg.downscale)  # (1, 3, H/s, W/s)
    named = {{f"{label} ({{k}})": m for k, m in models.items()}}
    plots.comparison_grid(named, lq, gt, title=f"{{data.source_name(src)}} x{{cfg.scale}} ({{WEIGHTS}})")
    plt.show()"""

X4 = """# x4 by applying the x2 models twice, next to bicubic x4 of the same input.
hero = next(s for s in test_src if data.source_name(s) == HERO)
gt = metrics.mod_crop(data.to_tensor(hero), 4)[None]  # (1, 3, H, W)
lq4 = data.degrade(gt, 4, cfg.downscale)  # (1, 3, H/4, W/4)
x4 = {{"lq (nearest)": plots.upsample_nearest(lq4, gt.shape[-2:]),
      "bicubic x4": metrics.bicubic(lq4, 4).clamp(0, 1)}}
for k, m in models.items():
    x4[f"{label} ({{k}}) x2 twice"] = infer.upscale_tensor(m, lq4, scale=4)
x4["ground truth"] = gt
plots.side_by_side(x4, title=f"{{HERO}}: x4 as two x2 passes ({{WEIGHTS}})");"""

TABLE = """# PSNR / SSIM on the Y channel (BT.601, `scale` px border cropped, 8-bit), as published tables do.
# "detail" = high-frequency energy of sr / gt (1 = as much fine detail as the original).
heldout = data.save_sources(test_src, Path(cfg.out_dir) / "heldout")
folders = {{"held-out photos": heldout}}
if BENCHMARK:
    folders[Path(BENCHMARK).name] = BENCHMARK
rows = []
for set_name, folder in folders.items():
    rows += [metrics.summary_row(metrics.evaluate(b, folder, cfg.scale), dataset=set_name)
             for b in ("bilinear", "bicubic")]
    rows += [metrics.summary_row(metrics.evaluate(m, folder, cfg.scale), dataset=set_name,
                                 method=f"{label} ({{k}})") for k, m in models.items()]
    rows += metrics.published(dataset=Path(folder).name, scale=cfg.scale)
columns = ["method", "dataset", "psnr_y", "ssim_y", "psnr_rgb", "detail", "lpips"]
print(metrics.format_table(rows, columns))
print(metrics.lpips_status()[1])
# Every model is judged against bicubic, not just the best one: a run that learned nothing
# must not hide behind a good one.
held = {{r["method"]: r["psnr_y"] for r in rows if r["dataset"] == "held-out photos"}}
gains = {{k: held[f"{label} ({{k}})"] - held["bicubic"] for k in models}}
for k, gain in gains.items():
    ok = gain > FLOOR_DB[k]
    verdict = "beats" if gain > 0 else "does NOT beat"
    floor = "" if ok else f", BELOW the {{FLOOR_DB[k]:+.1f}} dB floor"
    print(f"{{'' if ok else '!!! '}}{label} ({{k}}): {{held[f'{label} ({{k}})']:.2f}} dB, "
          f"{{gain:+.2f}} dB over bicubic ({{held['bicubic']:.2f}}) -> {{verdict}} bicubic{{floor}}")"""

SAVE_CELL = """# Figures and small fp16 models of this run go to runs/; SRLIB_SAVE=1 also refreshes the
# repository's images/ and checkpoints/, with the models that pass the floor only.
hero_gt = metrics.mod_crop(data.to_tensor(hero), cfg.scale)[None]
hero_lq = data.degrade(hero_gt, cfg.scale, cfg.downscale)
fig = plots.side_by_side(
    {{"bicubic": models["l1"].base_upscale(hero_lq).clamp(0, 1),
      "{label} (l1)": infer.upscale_tensor(models["l1"], hero_lq),
      "{label} (perceptual)": infer.upscale_tensor(models["perceptual"], hero_lq),
      "ground truth": hero_gt}},
    title=f"{{HERO}} (held out) x{{cfg.scale}}: bicubic vs learned ({{WEIGHTS}})")
for folder in [FIGURES] + ([Path("images")] if SAVE else []):
    fig.savefig(folder / "{kind}_hero.png", dpi=150)
plt.close(fig)  # saved for README; the notebook already showed these upscales
results = {{r["method"]: r for r in rows if r["dataset"] == "held-out photos"}}
for k in models:
    name = "{ckpt}" + ("" if k == "l1" else f"_{{k}}") + f"_x{{cfg.scale}}.pt"
    best_ckpt = Path(cfg.out_dir) / f"{{cfg.name}}_{{k}}" / "best.pt"
    targets = [Path(cfg.out_dir) / cfg.name / "export" / name]
    if SAVE and gains[k] > FLOOR_DB[k]:
        targets.append(Path("checkpoints") / name)
    elif SAVE:
        print(f"!!! not shipping {{name}}: {{gains[k]:+.2f}} dB is below the floor")
    for target in targets:
        infer.export_checkpoint(best_ckpt, target, metrics=results[f"{label} ({{k}})"])
        print("saved", target)"""


def build(kind: str) -> nbf.NotebookNode:
    k = KINDS[kind]
    fmt = dict(
        kind=kind,
        label=k["label"],
        imports=k["imports"],
        ckpt="unet" if kind == "unet" else "resnet_unet",
    )
    md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
    cells = [
        md(
            k["title"] + "\n\n" + k["intro"] + "\n\nRun it top to bottom (about 10 minutes on a "
            "2-core CPU with the default `quick` preset), or headless: `jupyter execute "
            f"{k['file']}`. Set `SRLIB_PRESET=full` on a GPU."
        ),
        md(
            "## Configuration\n\nOne typed `TrainConfig` (see `srlib/train.py`); presets fill it "
            "and any field can be overridden here."
        ),
        code(CONFIG.format(**fmt)),
        md(
            "## Data\n\nDownloaded Wikimedia Commons photos when `data/valued/images/` has any "
            "(see `data/valued/README.md`), otherwise the photos embedded in scikit-image, "
            "scikit-learn and matplotlib. `lq` is the antialiased downscale of `gt`."
        ),
        code(DATA),
        md(k["model_md"]),
        code(k["model"]),
        code(LOSS_CHECK),
        md(
            "## Training\n\nThe same model trained with L1 and with the perceptual loss, for a "
            "fixed number of steps (the same numbers on every run of this machine). `fit` "
            "checkpoints atomically to `runs/`, resumes if interrupted, and says so loudly when "
            "a run learns nothing (validation PSNR not above its own bicubic base)."
        ),
        code(TRAIN.format(**fmt)),
        md("## Loss curves\n\nTotal loss (linear and log), every loss part, and validation PSNR."),
        code(CURVES.format(**fmt)),
        md(
            "## Upscales of held-out photos\n\nPer model: the input, its base (bicubic) upscale, the "
            "prediction, the ground truth, the raw residual the model adds, and the residual it should add."
        ),
        code(SAMPLES.format(**fmt)),
        md("## x4 by two x2 passes"),
        code(X4.format(**fmt)),
        md(
            "## Comparison\n\nOn held-out photos (and on a benchmark folder if `SRLIB_BENCHMARK` "
            "points at one, e.g. `../shared/datasets/Set5`; published rows are labelled). Every "
            "model is then judged against bicubic: L1 models must gain at least 0.5 dB, "
            "perceptual ones more than 0 (`benchmarks/seeds.py` checks this over 5 seeds)."
        ),
        code(TABLE.format(**fmt)),
        code(SAVE_CELL.format(**fmt)),
    ]
    nb = nbf.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    for kind, k in KINDS.items():
        nbf.write(build(kind), Path(__file__).resolve().parent.parent / k["file"])
