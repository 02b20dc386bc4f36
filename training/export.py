"""Export a trained model for serving: TorchScript, ONNX (fp32) and INT8 ONNX, each checked for parity.

Every export has the same interface: input `image` (N x 3 x S x S float32, the shared preprocessing,
S = the card's input_size) and two outputs, `breed_logits` (N x 10) and `imagenet_logits` (N x 1000;
the frozen ImageNet head the open-set check reads). The batch axis is dynamic; the image size is
fixed (the `tf_` EfficientNets compute their "same" padding from it, so it is baked in).

Parity is measured on real val images through the shared preprocessing against the PyTorch model:
fp32 exports must agree on every top-1 and stay within 1e-3 of its logits, or the export fails.

INT8 uses onnxruntime static quantization in the QDQ format with unsigned 8-bit activations and
per-channel signed 8-bit weights (U8S8), MinMax-calibrated on seeded train images, after
`quant_pre_process` (symbolic shape inference + graph optimisation) as onnxruntime's guide recommends.
Why U8S8, measured here (Lite0 fine-tune, 224 px, 1 thread, batch 1, Xeon with AVX-512 VNNI):
fp32 8.8 ms/image; QDQ S8S8 (the guide's default) 8.2 ms, no gain; QDQ U8S8 4.7 ms and QOperator
U8S8 4.9 ms, 1.8x; full-val top-1 95.62 % fp32 vs 95.57 % U8S8. The INT8 archive's card carries
its own full-val accuracy, measured when the archive is built (`evaluate_export`).
Weights use 7 bits (`reduce_range`): without it, on an AVX2-only CPU (no VNNI) the U8S8 kernels
saturate and lite0 1.2.0 fell to 92.54 % (95.34 % with it, fp32 95.80 %).
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from woof.errors import WoofError
from woof.files import atomic_write_json
from woof.preprocess import preprocess

from .checkpoint import load_model
from .data import check_layout, list_samples, resolve_root, subset_per_class
from .evaluate import compute_metrics

FORMATS = ("torchscript", "onnx", "onnx-int8")
SERIALIZED_FILE = {"torchscript": "model.pt", "onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
INPUT_NAME = "image"
OUTPUT_NAMES = ("breed_logits", "imagenet_logits")
OPSET = 18
FP32_MAX_ABS_DIFF = 1e-3
INT8_MIN_AGREEMENT = 0.9  # a sanity floor only; the lead measures the INT8 model's full-val accuracy
PARITY_IMAGES = 20
CALIBRATION_IMAGES = 200
SEED = 0


def _wrap(model):
    """The model as a module whose forward returns (breed_logits, imagenet_logits)."""
    import torch

    if getattr(model, "imagenet_head", None) is None:
        raise WoofError("this model has no ImageNet head (trained with --pretrained none); the served "
                        "models need it for the open-set check")

    class BothHeads(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.forward_both(x)

    return BothHeads(model).eval()


# ---------------------------------------------------------------- images
def pick_images(root: Path, split: str, count: int, seed: int = SEED) -> list[Path]:
    """`count` images of `split`, spread evenly over the 10 classes, chosen reproducibly by `seed`."""

    check_layout(Path(root), splits=(split,))
    by_class: dict[int, list[Path]] = {}
    for s in list_samples(Path(root), split):
        by_class.setdefault(s.label, []).append(s.path)
    rng = random.Random(seed)
    per_class, extra = divmod(count, len(by_class))
    chosen = []
    for i, label in enumerate(sorted(by_class)):
        paths = sorted(by_class[label])
        chosen += rng.sample(paths, min(len(paths), per_class + (i < extra)))
    return chosen


def image_batch(paths: list[Path], spec: dict[str, Any]) -> np.ndarray:
    return np.stack([preprocess(p, spec) for p in paths]).astype(np.float32)


# ---------------------------------------------------------------- exporters
def export_torchscript(model, spec: dict[str, Any], path: Path) -> Path:
    import torch

    example = torch.zeros(2, 3, spec["input_size"], spec["input_size"])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings: the padding arithmetic is fixed by the image size
        traced = torch.jit.trace(_wrap(model), example)
        torch.jit.save(traced, str(path))  # FutureWarning: TorchServe 0.12 loads TorchScript, not torch.export
    return path


def export_onnx(model, spec: dict[str, Any], path: Path, card: dict[str, Any] | None = None) -> Path:
    import contextlib
    import io
    import json

    import onnx
    import torch

    example = torch.zeros(2, 3, spec["input_size"], spec["input_size"])
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(_wrap(model), (example,), str(path), input_names=[INPUT_NAME],
                          output_names=list(OUTPUT_NAMES), dynamic_shapes={"x": {0: batch}},
                          opset_version=OPSET, dynamo=True, external_data=False, verbose=False)
    proto = onnx.load(str(path))
    if card is not None:  # so a bare .onnx file still says what it is and how to feed it
        meta = {"woof_model": card["name"], "woof_version": card["version"],
                "woof_preprocessing": json.dumps(card["preprocessing"])}
        for key, value in meta.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(path))
    onnx.checker.check_model(proto)
    return path


class _Calibration:
    """onnxruntime CalibrationDataReader over real images through the shared preprocessing."""

    def __init__(self, paths: list[Path], spec: dict[str, Any], batch_size: int = 16):
        self.batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
        self.spec = spec
        self.position = 0

    def get_next(self):
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {INPUT_NAME: image_batch(self.batches[self.position - 1], self.spec)}

    def rewind(self):
        self.position = 0


def quantize_onnx(fp32_path: Path, path: Path, calibration: list[Path], spec: dict[str, Any]) -> dict[str, Any]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    reader_cls = type("CalibrationReader", (_Calibration, CalibrationDataReader), {})
    settings = {"quant_format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8", "per_channel": True,
                "reduce_range": True, "calibrate_method": "MinMax", "calibration_images": len(calibration),
                "pre_process": "quant_pre_process"}
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(str(prepared), str(path), reader_cls(calibration, spec),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        # 7-bit weights: U8S8 kernels on x86 CPUs without VNNI (AVX2 only) saturate
                        # 16-bit sums with full-range weights (onnxruntime's quantization guide);
                        # measured on an AVX2 EPYC: lite0 1.2.0 fell from 95.80 % to 92.54 % without it.
                        reduce_range=True, calibrate_method=CalibrationMethod.MinMax)
    return settings


# ---------------------------------------------------------------- running and parity
def ort_session(path: Path, threads: int = 2):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_export(path: Path, fmt: str, batch: np.ndarray, chunk: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(breed_logits, imagenet_logits) of an exported file for a preprocessed batch."""
    outs = []
    if fmt == "torchscript":
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu").eval()
        with torch.inference_mode():
            for i in range(0, len(batch), chunk):
                outs.append([t.numpy() for t in module(torch.from_numpy(batch[i:i + chunk]))])
    else:
        session = ort_session(path)
        for i in range(0, len(batch), chunk):
            outs.append(session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch[i:i + chunk]}))
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def evaluate_export(path: Path, fmt: str, data_root: str | Path, spec: dict[str, Any], chunk: int = 64,
                    progress: bool = True, limit_per_class: int | None = None) -> dict[str, Any]:
    """Top-1 of an exported file on the full val set and its ImageNet-val subset (card `metrics` shape)."""
    from tqdm import tqdm

    samples = list_samples(Path(data_root), "val")
    if limit_per_class:
        samples = subset_per_class(samples, limit_per_class)
    session = ort_session(path) if fmt != "torchscript" else None
    if session is None:
        raise WoofError("evaluate_export runs ONNX files; evaluate TorchScript with woof eval")
    outputs = []
    for i in tqdm(range(0, len(samples), chunk), desc=f"evaluating {path.name}", unit="batch", disable=not progress):
        batch = image_batch([s.path for s in samples[i:i + chunk]], spec)
        outputs.append(session.run([OUTPUT_NAMES[0]], {INPUT_NAME: batch})[0])
    labels = np.array([s.label for s in samples])
    mask = np.array([s.path.name.startswith("ILSVRC2012_val_") for s in samples])
    metrics = compute_metrics(np.concatenate(outputs), labels, mask)
    return {k: metrics[k] for k in ("val", "val_imagenet_val_subset", "top5")}


def run_pytorch(model, batch: np.ndarray, chunk: int = 10) -> tuple[np.ndarray, np.ndarray]:
    import torch

    wrapped = _wrap(model)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(batch), chunk):
            outs.append([t.numpy() for t in wrapped(torch.from_numpy(batch[i:i + chunk]))])
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def parity(reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """How closely `candidate` reproduces `reference` (each: breed logits, ImageNet logits)."""
    breed_diff = float(np.abs(reference[0] - candidate[0]).max())
    imagenet_diff = float(np.abs(reference[1] - candidate[1]).max())
    agree = reference[0].argmax(1) == candidate[0].argmax(1)
    return {"images": int(len(agree)), "top1_agreement": round(float(agree.mean()), 4),
            "max_abs_diff": max(breed_diff, imagenet_diff), "max_abs_diff_breed": breed_diff,
            "max_abs_diff_imagenet": imagenet_diff}


def check_parity(fmt: str, figures: dict[str, Any], min_int8_agreement: float = INT8_MIN_AGREEMENT) -> None:
    if fmt == "onnx-int8":
        if figures["top1_agreement"] < min_int8_agreement:
            raise WoofError(f"INT8 export agrees with the fp32 model on only {figures['top1_agreement']:.1%} of "
                            f"{figures['images']} val images (floor {min_int8_agreement:.0%})")
        return
    if figures["top1_agreement"] < 1.0 or figures["max_abs_diff"] > FP32_MAX_ABS_DIFF:
        raise WoofError(f"{fmt} export does not match PyTorch: top-1 agreement {figures['top1_agreement']:.1%}, "
                        f"max |logit difference| {figures['max_abs_diff']:.2e} (limit {FP32_MAX_ABS_DIFF:.0e})")


def export(model_dir: str | Path, out_dir: str | Path, data_root: str | Path, formats=FORMATS,
           parity_images: int = PARITY_IMAGES, calibration_images: int = CALIBRATION_IMAGES, seed: int = SEED,
           min_int8_agreement: float = INT8_MIN_AGREEMENT, log=print) -> dict[str, dict[str, Any]]:
    """Export the model in `model_dir` to `out_dir` in each of `formats`; verify and return parity figures.

    Returns {format: {"file": Path, "parity": {...}, ...}}. Raises WoofError when a parity check fails.
    """
    import onnxruntime
    import torch

    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise WoofError(f"unknown export format {', '.join(unknown)}; use {', '.join(FORMATS)}")
    model, card = load_model(model_dir)
    spec = card["preprocessing"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    val = pick_images(Path(data_root), "val", parity_images, seed)
    batch = image_batch(val, spec)
    reference = run_pytorch(model, batch)
    versions = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    results: dict[str, dict[str, Any]] = {}
    for fmt in formats:
        start = time.perf_counter()
        path = out_dir / SERIALIZED_FILE[fmt]
        info: dict[str, Any] = {"format": fmt, "serialized_file": path.name}
        if fmt == "torchscript":
            export_torchscript(model, spec, path)
            info["exported_with"] = {"torch": versions["torch"], "method": "torch.jit.trace"}
        elif fmt == "onnx":
            export_onnx(model, spec, path, card)
            info["exported_with"] = {**versions, "method": "torch.onnx.export (dynamo)", "opset": OPSET}
        else:
            # quantize the fp32 export made (and checked) above, or make a throwaway one
            fp32 = results["onnx"]["file"] if "onnx" in results else export_onnx(
                model, spec, out_dir / f".fp32-{SERIALIZED_FILE['onnx']}", card)
            calibration = pick_images(Path(data_root), "train", calibration_images, seed)
            info["quantization"] = quantize_onnx(fp32, path, calibration, spec)
            info["quantization"]["calibration_seed"] = seed
            info["exported_with"] = {**versions, "method": "onnxruntime.quantization.quantize_static",
                                     "opset": OPSET}
            if "onnx" not in results:
                fp32.unlink()
        figures = parity(reference, run_export(path, fmt, batch))
        figures["reference"] = "PyTorch fp32 (same weights, shared preprocessing)"
        figures["seed"] = seed
        info["parity"] = figures
        info["seconds"] = round(time.perf_counter() - start, 1)
        info["file"] = path
        log(f"{fmt:12s} {path.name}: top-1 agreement {figures['top1_agreement']:.1%} on {figures['images']} val "
            f"images, max |logit diff| {figures['max_abs_diff']:.2e} ({info['seconds']} s)")
        check_parity(fmt, figures, min_int8_agreement)
        results[fmt] = info
    return results


def export_cli(model_dir: str, out: str, data: str | None, formats: list[str], parity_images: int,
               calibration_images: int) -> int:
    """`woof export`: write the files and a parity.json beside them."""

    out_dir = Path(out)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        results = export(model_dir, work, resolve_root(data), formats, parity_images, calibration_images)
        out_dir.mkdir(parents=True, exist_ok=True)
        for info in results.values():
            shutil.move(str(info.pop("file")), out_dir / info["serialized_file"])
        atomic_write_json(out_dir / "parity.json", results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {', '.join(SERIALIZED_FILE[f] for f in formats)} and parity.json to {out_dir}")
    return 0
