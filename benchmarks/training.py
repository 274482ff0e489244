"""Training throughput: the reference's data pipeline (torchvision DataLoader + PIL transforms) vs pai's
device-resident uint8 pipeline (`TensorImageData.train_batches`), in one process, on the same CIFAR-shaped
synthetic data (3x32x32, 10 classes), with the same model, batch size and number of steps.

(a) reference: a torchvision-style Dataset over uint8 HWC numpy images -> PIL -> RandomCrop(32, padding=4)
    -> RandomHorizontalFlip -> ToTensor -> Normalize, in a DataLoader with shuffle, num_workers in --workers,
    pin_memory on CUDA, each batch copied to the device;
(b) pai: the images live on the device as one uint8 tensor; gather + crop + flip + normalise run batched there.

Measured: data loading alone (batches produced and handed over, nothing else) and full training steps (forward,
loss, backward, SGD step of the paper's optimizer — lr 0.03, momentum 0.9, wd 5e-4). Reported: images/s, the
ratios, peak memory (main-process peak RSS from getrusage after resetting the high-water mark, the largest
DataLoader worker's peak RSS, and CUDA max_memory_allocated on a GPU) and the projected wall time of the
paper's recipe (ResNet-18, CIFAR-10, 50k images, 160 epochs) from the measured step throughput.

Pipelines run interleaved (round by round) so that a shared machine slows them alike. Examples:

    python benchmarks/training.py --model resnet18 --steps 3                 # CPU, the paper's model
    python benchmarks/training.py --model resnet20 --steps 10 --threads 1
    python benchmarks/training.py --device cuda --steps 50 --precision bf16 --channels-last true
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pai.data.synthetic import build_synthetic  # noqa: E402
from pai.data.tensor_data import TensorImageData  # noqa: E402
from pai.models.cifar_resnet import resnet18  # noqa: E402
from pai.models.he_resnet import resnet20  # noqa: E402
from pai.train.recipe import Recipe  # noqa: E402

MODELS: dict[str, Callable[[int], nn.Module]] = {"resnet18": resnet18, "resnet20": resnet20}
PAPER = {"model": "resnet18", "images": 50_000, "epochs": 160}
Batch = tuple[Tensor, Tensor]


# ---- (a) the reference pipeline ---------------------------------------------------------------------------------
class HWCImages(Dataset):
    """What torchvision's CIFAR10 dataset does per sample: a uint8 HWC array -> PIL image -> transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def reference_loader(data: TensorImageData, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    import torchvision.transforms as T

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(data.mean, data.std)])
    images, labels = data.split("train")
    x = images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C) uint8, as CIFAR10.data
    y = labels.numpy()
    return DataLoader(HWCImages(x, y, tf), batch_size=batch_size, shuffle=True, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=False)


def reference_batches(loader: DataLoader, device: torch.device) -> Iterator[Batch]:
    while True:  # epoch after epoch
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


# ---- (b) pai's pipeline -------------------------------------------------------------------------------------------
def pai_batches(data: TensorImageData, batch_size: int, device: torch.device, seed: int = 0) -> Iterator[Batch]:
    epoch = 0
    while True:
        yield from data.train_batches(batch_size, epoch, seed, device)
        epoch += 1


# ---- measurement ----------------------------------------------------------------------------------------------
def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux: clear_refs 5), so getrusage's ru_maxrss
    afterwards is the peak of the phase that follows. False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    kb = resource.getrusage(who).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return kb / 1024 / (1024 if platform.system() == "Darwin" else 1)


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: nn.Module, recipe: Recipe, device: torch.device) -> Callable[[Tensor, Tensor], None]:
    """The training step of `pai.train.loop.train` (autocast, memory format, loss, SGD), without bookkeeping."""
    memory_format = torch.channels_last if recipe.use_channels_last(device) else torch.contiguous_format
    model.to(device=device, memory_format=memory_format).train()
    step_model = torch.compile(model) if recipe.compile else model
    optimizer = recipe.optimizer(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    dtype = recipe.autocast_dtype(device)

    def step(x: Tensor, y: Tensor) -> None:
        x = x.contiguous(memory_format=memory_format)
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            loss = loss_fn(step_model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(batches: Iterator[Batch], steps: int, warmup: int, device: torch.device,
            step: Callable[[Tensor, Tensor], None] | None) -> dict:
    """Images/s over `steps` batches after `warmup` untimed ones (worker start-up, compilation, allocator)."""
    for _ in range(warmup):
        x, y = next(batches)
        if step is not None:
            step(x, y)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0, n = time.perf_counter(), 0
    for _ in range(steps):
        x, y = next(batches)
        if step is not None:
            step(x, y)
        n += y.numel()
    sync(device)
    dt = time.perf_counter() - t0
    out = {"img_s": n / dt, "seconds": dt}
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def run_phase(name: str, make_batches: Callable[[], Iterator[Batch]], steps: int, warmup: int,
              device: torch.device, step: Callable | None) -> dict:
    start = current_rss_mb()
    exact = reset_peak_rss()
    batches = make_batches()
    try:
        res = measure(batches, steps, warmup, device, step)
    finally:
        batches.close()  # shuts a DataLoader's workers down now, so they are reaped before the next phase
    res["rss_peak_mb"] = peak_rss_mb() if exact else float("nan")
    res["rss_extra_mb"] = res["rss_peak_mb"] - start
    res["name"] = name
    return res


# ---- report ---------------------------------------------------------------------------------------------------
def fmt_hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(MODELS), default="resnet18", help="resnet18 = the paper's model")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per pipeline and round")
    ap.add_argument("--data-steps", type=int, default=20, help="timed batches for data loading alone")
    ap.add_argument("--warmup", type=int, default=1, help="untimed batches/steps before each measurement")
    ap.add_argument("--batch-size", type=int, default=512, help="512 = the paper's")
    ap.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda | cuda:N")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    ap.add_argument("--channels-last", choices=["auto", "true", "false"], default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (both pipelines)")
    ap.add_argument("--workers", default="0,2", help="DataLoader num_workers values for the reference")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of data-alone measurements")
    ap.add_argument("--step-rounds", type=int, default=1, help="rounds of full-step measurements")
    ap.add_argument("--num-train", type=int, default=50_000, help="synthetic training images (CIFAR-10: 50k)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in the main process")
    ap.add_argument("--skip-steps", action="store_true", help="data loading alone only")
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")
    workers = [int(w) for w in args.workers.split(",") if w != ""]
    channels_last = {"auto": "auto", "true": True, "false": False}[args.channels_last]
    recipe = Recipe(epochs=1, batch_size=args.batch_size,
                    optimizer=lambda p: torch.optim.SGD(p, lr=0.03, momentum=0.9, weight_decay=5e-4),
                    precision=args.precision, channels_last=channels_last, compile=args.compile)

    data = build_synthetic(num_train=args.num_train, num_test=10, image_size=32, in_channels=3, num_classes=10,
                           crop_padding=4, flip=True)
    if device.type == "cuda":
        data.preload(device)  # the one-off upload, outside the timings (as in a run: once per process)

    pipelines: dict[str, Callable[[], Iterator[Batch]]] = {
        f"torchvision DataLoader + PIL, num_workers={w}":
            (lambda w=w: reference_batches(reference_loader(data, args.batch_size, w, device), device))
        for w in workers
    }
    pipelines["pai TensorImageData (uint8 on device)"] = lambda: pai_batches(data, args.batch_size, device)
    ours = list(pipelines)[-1]

    base_rss = current_rss_mb()
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; batch {args.batch_size}, {args.num_train} images", flush=True)
    data_res: dict[str, list[dict]] = {k: [] for k in pipelines}
    for r in range(args.rounds):
        order = list(pipelines) if r % 2 == 0 else list(reversed(pipelines))
        for name in order:
            res = run_phase(name, pipelines[name], args.data_steps, args.warmup, device, None)
            data_res[name].append(res)
            print(f"[data] round {r + 1}  {name:45s} {res['img_s']:10.0f} img/s  peak RSS {res['rss_peak_mb']:.0f} MB",
                  flush=True)

    step_res: dict[str, list[dict]] = {k: [] for k in pipelines}
    if not args.skip_steps:
        torch.manual_seed(0)
        model = MODELS[args.model](10)
        step = make_step(model, recipe, device)
        for r in range(args.step_rounds):
            order = list(pipelines) if r % 2 == 0 else list(reversed(pipelines))
            for name in order:
                res = run_phase(name, pipelines[name], args.steps, args.warmup, device, step)
                step_res[name].append(res)
                print(f"[step] round {r + 1}  {name:45s} {res['img_s']:10.1f} img/s  "
                      f"peak RSS {res['rss_peak_mb']:.0f} MB", flush=True)

    # ---- the table -------------------------------------------------------------------------------------------
    def med(rs: list[dict], key: str) -> float:
        vals = [r[key] for r in rs if key in r]
        return statistics.median(vals) if vals else float("nan")

    children_peak = peak_rss_mb(resource.RUSAGE_CHILDREN)
    dtype = recipe.autocast_dtype(device)
    lines = [
        f"Device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                               f" ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)"),
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s) in the main process, "
        f"load average at the end {', '.join(f'{v:.1f}' for v in os.getloadavg())}",
        f"Command: `python benchmarks/training.py {' '.join(sys.argv[1:])}`",
        f"Batch {args.batch_size}; synthetic CIFAR-shaped data, {args.num_train} images 3x32x32, 10 classes; "
        f"model {args.model}; precision {'bf16 autocast' if dtype else 'fp32'}; "
        f"channels_last {recipe.use_channels_last(device)}; compile {recipe.compile}. "
        f"Data alone: {args.rounds} round(s) x {args.data_steps} batches; full steps: {args.step_rounds} round(s) x "
        f"{args.steps} steps; {args.warmup} untimed warm-up batch(es) each; medians over rounds.",
        "",
        "| pipeline | data alone img/s | pai / this (data) | full step img/s | pai / this (step) "
        "| peak RSS MB (main) | peak - RSS at phase start, MB |"
        + (" CUDA peak MB (step) |" if device.type == "cuda" else ""),
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if device.type == "cuda" else ""),
    ]
    ours_data, ours_step = med(data_res[ours], "img_s"), med(step_res[ours], "img_s")
    for name in pipelines:
        d, s = med(data_res[name], "img_s"), med(step_res[name], "img_s")
        rss = max(med(data_res[name], "rss_peak_mb"), med(step_res[name], "rss_peak_mb"))
        extra = max(med(data_res[name], "rss_extra_mb"), med(step_res[name], "rss_extra_mb"))
        row = (f"| {name} | {d:,.0f} | {ours_data / d:.1f}x | "
               + ("-" if s != s else f"{s:,.1f}") + " | " + ("-" if s != s else f"{ours_step / s:.2f}x")
               + f" | {rss:,.0f} | {extra:+,.0f} |")
        if device.type == "cuda":
            row += f" {med(step_res[name], 'cuda_peak_mb'):,.0f} |"
        lines.append(row)
    lines += ["", f"RSS of the process before any pipeline ran (torch, the model, the {args.num_train:,}-image set "
              f"as a uint8 tensor plus its HWC numpy copy for the reference): {base_rss:,.0f} MB. Largest DataLoader "
              f"worker process, peak RSS: {children_peak:,.0f} MB (getrusage RUSAGE_CHILDREN; the main-process "
              "columns exclude workers; with num_workers=2 there are two of them)."]
    if not args.skip_steps:
        which = "the paper's model" if args.model == PAPER["model"] else f"{args.model}, NOT the paper's ResNet-18"
        lines += ["", f"Projected training time of the paper recipe ({PAPER['epochs']} epochs x {PAPER['images']:,} "
                  f"images) at the measured full-step throughput ({which}; training steps only, the per-epoch test "
                  "evaluation and checkpoint not included):", ""]
        for name in pipelines:
            s = med(step_res[name], "img_s")
            lines.append(f"- {name}: {fmt_hours(PAPER['epochs'] * PAPER['images'] / s)} "
                         f"({fmt_hours(PAPER['images'] / s)} per epoch)")
    report = "\n".join(lines)
    print("\n" + report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
