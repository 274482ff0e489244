"""Training-speed knobs of the loop: precision (fp32 | bf16 autocast | auto), channels_last, torch.compile,
evaluation in large batches under inference mode, and a shortened epoch producing only the batches it uses."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch import nn

from pai.data.synthetic import build_synthetic
from pai.errors import PaiConfigError
from pai.models.he_resnet import resnet20
from pai.pruning import make_masks, prunable_weights
from pai.train.evaluate import evaluate
from pai.train.loop import train
from pai.train.recipe import Recipe

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models on a busy 2-core machine run far faster on one intra-op thread (see tests/conftest.py).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def recipe(**kw) -> Recipe:
    base = {
        "epochs": 1,
        "batch_size": 32,
        "optimizer": functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4),
        "eval_batch_size": 1024,
    }
    return Recipe(**{**base, **kw})


def small_data(num_train: int = 256, num_test: int = 64, size: int = 8):
    return build_synthetic(num_train=num_train, num_test=num_test, image_size=size, in_channels=3)


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return resnet20(10, width=0.25)


def random_masks(model: nn.Module, sparsity: float = 0.8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return make_masks({n: torch.rand(p.shape, generator=g) for n, p in prunable_weights(model).items()}, sparsity)


def conv_output_dtypes(model: nn.Module) -> tuple[list[torch.dtype], list]:
    seen: list[torch.dtype] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
               for m in model.modules() if isinstance(m, nn.Conv2d)]
    return seen, handles


# ---- precision ----------------------------------------------------------------------------------------------
def test_auto_resolves_to_fp32_contiguous_on_cpu_and_bf16_channels_last_on_cuda() -> None:
    r = recipe()
    assert r.precision == "auto" and r.channels_last == "auto" and r.compile is False
    assert r.autocast_dtype(CPU) is None and r.use_channels_last(CPU) is False
    cuda = torch.device("cuda")  # a device object only; nothing runs on it
    assert r.autocast_dtype(cuda) is torch.bfloat16 and r.use_channels_last(cuda) is True
    assert recipe(precision="fp32").autocast_dtype(cuda) is None
    assert recipe(precision="bf16").autocast_dtype(CPU) is torch.bfloat16
    assert recipe(channels_last=True).use_channels_last(CPU) is True
    assert recipe(channels_last=False).use_channels_last(cuda) is False


@pytest.mark.parametrize(("key", "value"), [("precision", "fp16"), ("channels_last", "no"), ("compile", "yes")])
def test_bad_knobs_name_the_key(key: str, value: str) -> None:
    with pytest.raises(PaiConfigError, match=rf"train\.{key}="):
        recipe(**{key: value})


def test_fp32_loop_runs_convs_in_fp32(tmp_path: Path) -> None:
    model = small_model()
    seen, handles = conv_output_dtypes(model)
    train(model, small_data(64), recipe(steps_per_epoch=1), CPU, 0, None, tmp_path / "last.pt")
    for h in handles:
        h.remove()
    assert seen and set(seen) == {torch.float32}


def test_bf16_autocast_on_cpu_runs_in_bf16_trains_and_keeps_masks_zero(tmp_path: Path) -> None:
    model = small_model()
    masks = random_masks(model, 0.5)
    seen, handles = conv_output_dtypes(model)
    history = train(model, small_data(), recipe(epochs=4, precision="bf16"), CPU, 0, masks, tmp_path / "last.pt")
    for h in handles:
        h.remove()
    # Epoch 1 = 8 training steps (bf16 under autocast), then one evaluation batch (fp32, outside autocast).
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert len(seen) == 4 * 9 * convs
    assert set(seen[: 8 * convs]) == {torch.bfloat16}
    assert set(seen[8 * convs : 9 * convs]) == {torch.float32}
    # The master weights stay fp32, and it learns.
    assert all(p.dtype == torch.float32 for p in model.parameters())
    losses = [h["train_loss"] for h in history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0], losses  # measured: 2.24 -> 1.51
    assert history[-1]["test_acc"] > 0.25, history[-1]  # chance is 0.1; measured 0.39
    params = dict(model.named_parameters())
    for name, m in masks.items():
        assert torch.count_nonzero(params[name].detach()[~m]) == 0, name
        assert torch.count_nonzero(params[name].detach()[m]) > 0, name


# ---- channels_last -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_channels_last_gives_the_same_logits_as_contiguous(mode: str) -> None:
    model = small_model()
    model.train(mode == "train")
    x = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    want = model(x)
    cl = small_model().to(memory_format=torch.channels_last)
    cl.train(mode == "train")
    assert cl.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not cl.conv1.weight.is_contiguous()  # really re-laid out (3 input channels, 3x3 kernel)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    got = cl(x_cl)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (got - want).abs().max()


def test_loop_lays_out_model_channels_last_when_asked(tmp_path: Path) -> None:
    model = small_model()
    layouts: list[bool] = []
    model.conv1.register_forward_pre_hook(
        lambda _m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    data = small_data(64, size=16)
    train(model, data, recipe(steps_per_epoch=2, channels_last=True), CPU, 0, None, tmp_path / "last.pt")
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert layouts and all(layouts)  # training batches and evaluation batches
    model2 = small_model()
    train(model2, data, recipe(steps_per_epoch=2), CPU, 0, None, tmp_path / "contig.pt")
    assert model2.conv1.weight.is_contiguous()


# ---- torch.compile -----------------------------------------------------------------------------------------
@pytest.mark.slow  # inductor compiles forward and backward with gcc: ~1-3 min cold on a busy 2-core CPU
def test_compile_trains_two_steps_on_cpu(tmp_path: Path) -> None:
    torch._dynamo.reset()
    stats = torch._dynamo.utils.counters["stats"]
    graphs_before = stats["unique_graphs"]
    model = small_model()
    masks = random_masks(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    history = train(model, small_data(64), recipe(steps_per_epoch=2, compile=True), CPU, 0, masks,
                    tmp_path / "last.pt")
    graphs = stats["unique_graphs"] - graphs_before
    torch._dynamo.reset()
    assert graphs >= 1  # the forward really went through dynamo
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0]["train_loss"]))
    after = dict(model.named_parameters())
    assert not torch.equal(after["conv1.weight"], before["conv1.weight"])
    for name, m in masks.items():
        assert torch.count_nonzero(after[name].detach()[~m]) == 0, name


# ---- evaluation and the epoch -----------------------------------------------------------------------------
def test_evaluate_uses_large_batches_under_inference_mode_and_restores_mode() -> None:
    data = small_data(64, num_test=300)
    model = small_model()
    model.train()
    calls: list[tuple[int, bool, bool]] = []
    model.register_forward_pre_hook(
        lambda m, args: calls.append((args[0].shape[0], torch.is_inference_mode_enabled(), m.training)))
    loss, acc = evaluate(model, data, CPU, batch_size=256)
    assert calls == [(256, True, False), (44, True, False)]
    assert model.training
    # Same numbers as a plain per-batch computation.
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in data.test_batches(256, CPU)])
        y = torch.cat([y for _, y in data.test_batches(256, CPU)])
    assert loss == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-6)
    assert acc == int((logits.argmax(1) == y).sum()) / 300


class CountingData:
    """Counts the training batches the loop pulls from the dataset."""

    def __init__(self, data) -> None:
        self.data = data
        self.pulled = 0

    def __getattr__(self, name: str):
        return getattr(self.data, name)

    def train_batches(self, *args, **kwargs):
        for batch in self.data.train_batches(*args, **kwargs):
            self.pulled += 1
            yield batch


def test_shortened_epoch_produces_only_the_batches_it_trains_on(tmp_path: Path) -> None:
    data = CountingData(small_data(256))
    train(small_model(), data, recipe(epochs=2, steps_per_epoch=3), CPU, 0, None, tmp_path / "last.pt")
    assert data.pulled == 2 * 3
    full = CountingData(small_data(100))
    train(small_model(), full, recipe(), CPU, 0, None, tmp_path / "full.pt")
    assert full.pulled == 4  # 100 samples at batch 32: the last partial batch is trained on
