"""`srlib export`: a checkpoint as pt, safetensors, onnx or ncnn, checked, with a model card."""

from __future__ import annotations

import argparse
from pathlib import Path

from srlib.cli.errors import CliError, one_line
from srlib.cli.upscale import file_id


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `export` subcommand and its flags."""
    export = sub.add_parser(
        "export",
        help="a checkpoint for srlib, chaiNNer/ComfyUI, onnxruntime or upscayl/ncnn",
        description="Export a checkpoint as pt (srlib's small inference checkpoint), "
        "safetensors (weights + srlib's metadata; chaiNNer and ComfyUI open Compact and SPAN), "
        "onnx or ncnn (checked against PyTorch in onnxruntime / ncnn: above the tolerance "
        "nothing is written), with a model card (FILE.README.md, FILE.json). DST is a file or a "
        "folder; the scale is put in the name when it is not there (unet.onnx -> "
        "unet_x2.onnx; a folder: <checkpoint name>_x2.onnx).",
    )
    export.add_argument("src", help="an srlib checkpoint (a run's best.pt, or an export)")
    export.add_argument("dst", help="output file or folder")
    export.add_argument("--overwrite", action="store_true", help="replace dst if it exists")
    kind = export.add_mutually_exclusive_group()
    kind.add_argument(
        "--format",
        choices=["pt", "safetensors", "onnx", "ncnn"],
        default=None,
        help="default: from dst's suffix (.pt/.pth, .safetensors, .onnx, .param/.bin), else pt",
    )
    kind.add_argument(
        "--onnx", action="store_true", help="the same as --format onnx (needs srlib[onnx])"
    )
    precision = export.add_mutually_exclusive_group()
    precision.add_argument(
        "--fp32",
        dest="precision",
        action="store_const",
        const="fp32",
        default=None,
        help="float32 weights (the default for onnx)",
    )
    precision.add_argument(
        "--fp16",
        dest="precision",
        action="store_const",
        const="fp16",
        help="float16 weights (the default for pt, safetensors and ncnn); onnx: an fp16 graph, "
        "fp16 input and output",
    )
    card = export.add_argument_group("model card", "what a checkpoint does not record")
    card.add_argument("--author", default=None, help="who trained it")
    card.add_argument("--license", default=None, help="its licence, an SPDX id (e.g. CC-BY-4.0)")
    card.add_argument("--dataset", default=None, help="what it was trained on")
    export.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export a checkpoint (--format pt|safetensors|onnx|ncnn), checked, with its model card."""
    from srlib import export

    src = Path(args.src)
    if not src.is_file():
        raise CliError(f"checkpoint not found: {src}")
    if Path(args.dst).exists() and file_id(Path(args.dst)) == file_id(src):
        raise CliError(f"{args.dst} is the source checkpoint; export to another file")
    try:
        fmt = export.pick_format("onnx" if args.onnx else args.format, args.dst)
    except ValueError as e:
        raise CliError(str(e)) from e
    half = export.DEFAULT_HALF[fmt] if args.precision is None else args.precision == "fp16"
    try:
        model, ckpt = _export_source(src)
        dst = export.output_path(args.dst, src, model.scale, fmt)
    except ValueError as e:
        raise CliError(str(e)) from e
    files = export.written_files(dst, fmt)
    if any(file_id(f) == file_id(src) for f in files if f.exists()):
        raise CliError(f"{dst} is the source checkpoint; export to another file")
    existing = [f for f in files if f.exists()]
    if existing and not args.overwrite:  # an earlier export, or a model someone shipped
        raise CliError(f"{existing[0]} exists; pass --overwrite to replace it")
    try:
        checks, runtime = _export_to(fmt, src, dst, model, ckpt, half)
    except ImportError as e:  # the onnx or export extra is not installed
        raise CliError(str(e)) from e
    except Exception as e:  # a difference above the tolerance (nothing written), unwritable dst
        what = "ONNX" if fmt == "onnx" else fmt
        raise CliError(f"cannot export {src} to {what}: {one_line(e)}") from e
    for shape, diff in checks.items():
        size = "x".join(map(str, shape))
        print(f"check: input {size}: max abs difference {runtime} vs PyTorch {diff:.1e}")
    if checks:
        tol = export.FP16_TOLERANCE if half else export.TOLERANCE
        print(f"max difference {max(checks.values()):.1e} (tolerance {tol:g})")
    model_files = files[:-2]
    text, card = export.model_card(
        ckpt, model, model_files, fmt, checks, half, args.author, args.license, args.dataset
    )
    export.write_card(dst, text, card)
    size = sum(f.stat().st_size for f in model_files) / 1e6
    s, weights = model.scale, "fp16" if half else "fp32"
    if fmt == "onnx":
        print(
            f"wrote {dst} ({size:.2f} MB, opset {export.ONNX_OPSET}, IR "
            f"{export.ONNX_IR_VERSION}, {weights}): input (B, 3, h, w) RGB in [0, 1] -> output "
            f"(B, 3, {s}h, {s}w) clamped to [0, 1]"
        )
    elif fmt == "ncnn":
        print(
            f"wrote {dst} + {dst.with_suffix('.bin').name} ({size:.2f} MB, {weights} weights): "
            f"blob {export.NCNN_INPUT} (3, h, w) RGB in [0, 1] -> {export.NCNN_OUTPUT} "
            f"(3, {s}h, {s}w) clamped to [0, 1]"
        )
    else:
        print(f"wrote {dst} ({size:.2f} MB, {weights} weights)")
    print(f"model card: {' and '.join(map(str, export.card_paths(dst)))}")
    return 0


def _export_source(src: Path) -> tuple:
    """(model in float32, checkpoint) of an srlib checkpoint; ValueError for anything else."""
    from srlib.training.checkpoint import load_model

    try:
        model, ckpt = load_model(src)  # float32, whatever the checkpoint stores
    except Exception as e:  # corrupt file, not a checkpoint, NaN weights
        raise ValueError(f"cannot load checkpoint {src}: {one_line(e)}") from e
    if "model" not in ckpt:  # a community model spandrel loaded: its own files are the export
        raise ValueError(f"{src} is not an srlib checkpoint ({model.config['arch']}); export "
                         "takes srlib's own checkpoints")  # fmt: skip
    return model, ckpt


def _export_to(
    fmt: str, src: Path, dst: Path, model, ckpt: dict, half: bool
) -> tuple[dict[tuple[int, ...], float], str]:
    """Write one format; returns (max abs difference per checked shape, runtime checked in)."""
    from srlib import export
    from srlib.infer import write_inference_checkpoint

    if fmt == "pt":
        write_inference_checkpoint(ckpt, dst, half=half)
        return {}, ""
    if fmt == "safetensors":
        export.export_safetensors(ckpt, dst, half=half)
        return {}, ""
    if fmt == "onnx":
        return export.export_onnx(model, dst, fp16=half), "onnxruntime"
    return export.export_ncnn(model, dst, fp16=half), "ncnn"
