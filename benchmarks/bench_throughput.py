"""Training throughput of the LSTM at a fixed size, in windows per second and as a share of peak FLOP/s.

Model: 2 layers, hidden 64, lookback 168, horizon 48, batch 256, P10/P50/P90 outputs, on the shipped
ETTh1 sensors (7 hourly series). One training step is what `fit` runs per batch: gather the windows
from the concatenated data (no copies of the data), forward, pinball loss, backward, clip, AdamW.
Measured on the CPU with 1 thread and with every core, and on CUDA (fp32 and bf16) when present.

Run: .venv/bin/python -m benchmarks.bench_throughput [--steps 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lstm_model import LSTMForecaster, ModelConfig, Panel, SeriesScaler, WindowSource
from lstm_model.losses import pinball_loss
from lstm_model.runtime import available_cores, torch_threads, use_bf16
from lstmcast.demo import sensor_frame

CFG = ModelConfig(lookback=168, horizon=48, hidden_size=64, num_layers=2, dropout=0.1)
BATCH = 256


def lstm_flops_per_window(cfg: ModelConfig, n_inputs: int) -> int:
    """Forward multiply-adds of the recurrent layers x 2: four gates, each (input + hidden) x hidden.

    PyTorch's FLOP counter does not see the fused CPU LSTM kernel, so this part is counted by hand;
    the elementwise gate arithmetic (a few FLOPs per unit and step) is left out as negligible.
    """
    steps = cfg.lookback // cfg.patch_len
    first_in = cfg.hidden_size if cfg.patch_len > 1 else n_inputs
    per_step = sum(2 * 4 * cfg.hidden_size * (i + cfg.hidden_size) for i in
                   [first_in] + [cfg.hidden_size] * (cfg.num_layers - 1))  # fmt: skip
    return steps * per_step


def dense_flops_per_window(model: LSTMForecaster, x: torch.Tensor) -> int:
    """FLOPs of everything except the LSTM (linear layers), from PyTorch's counter."""
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // x.shape[0]


def cpu_peak_gflops() -> tuple[float, str]:
    """Nominal FP32 peak of the cores this process may use: cores x GHz x FLOPs per cycle."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", info)
    ghz = float(mhz.group(1)) / 1000 if mhz else float("nan")
    flags = set(re.search(r"flags\s*:(.*)", info).group(1).split()) if "flags" in info else set()
    if "avx512f" in flags:
        per_cycle, isa = 64, "AVX-512 FMA x2"
    elif {"avx2", "fma"} <= flags:
        per_cycle, isa = 32, "AVX2 FMA x2 (8 fp32 lanes x 2 pipes x 2 FLOPs)"
    else:
        per_cycle, isa = 8, "SSE"
    cores = available_cores()
    return cores * ghz * per_cycle, f"{cores} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle ({isa})"


def make_source(device: torch.device) -> WindowSource:
    frame = sensor_frame()
    panel = Panel.from_frame(frame, series_col="series_id", time_col="ts", target_col="value")
    scaler = SeriesScaler().fit(panel)
    return WindowSource.from_panel(panel, CFG.lookback, CFG.horizon, scaler).to(device)


def time_training(
    source: WindowSource, device: torch.device, bf16: bool, steps: int, cfg: ModelConfig = CFG
) -> float:
    """Windows per second over `steps` training steps, after 3 warm-up steps."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = LSTMForecaster(1, 0, cfg).to(device).train()
    levels = torch.tensor(CFG.quantiles, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    span = CFG.lookback + CFG.horizon
    bounds = zip(source.offsets[:-1], source.offsets[1:], strict=True)
    starts_pool = np.concatenate([np.arange(lo, hi - span + 1) for lo, hi in bounds])  # every full window

    def step() -> None:
        batch = source.gather(rng.choice(starts_pool, BATCH))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = model(batch.x_past, batch.x_future).float()
        loss = pinball_loss(pred, batch.y, levels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * BATCH / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per setting")
    args = parser.parse_args()

    cpu = torch.device("cpu")
    x = torch.zeros(BATCH, CFG.lookback, 1)
    forward = lstm_flops_per_window(CFG, 1) + dense_flops_per_window(LSTMForecaster(1, 0, CFG), x)
    train_flops = 3 * forward  # backward costs about twice the forward
    peak, peak_how = cpu_peak_gflops()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({available_cores()} usable), "
        f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}"
    )
    print(
        f"model: layers {CFG.num_layers}, hidden {CFG.hidden_size}, lookback {CFG.lookback}, "
        f"horizon {CFG.horizon}, batch {BATCH}, quantiles {CFG.quantiles}"
    )
    lstm_part = lstm_flops_per_window(CFG, 1)
    print(
        f"FLOPs per window: forward {forward / 1e6:.2f} M (LSTM {lstm_part / 1e6:.2f} M), "
        f"training step ~3x forward = {train_flops / 1e6:.2f} M"
    )
    print(f"CPU nominal fp32 peak: {peak:.1f} GFLOP/s = {peak_how}\n")
    print("| device | threads | precision | windows/s | GFLOP/s | share of peak |")
    print("|---|---|---|---|---|---|")
    source = make_source(cpu)
    for threads in sorted({1, available_cores()}):
        with torch_threads(threads):
            wps = time_training(source, cpu, bf16=False, steps=args.steps)
        gflops = wps * train_flops / 1e9
        share = gflops / (peak * threads / available_cores())
        print(f"| cpu | {threads} | fp32 | {wps:,.0f} | {gflops:.2f} | {share:.1%} of {threads}-core peak |")
    # Not the fixed size above: the same model reading the lookback in 7 daily segments (patch_len 24),
    # the setting the accuracy benchmarks use; FLOPs differ, so only windows/s is comparable.
    segmented = dataclasses.replace(CFG, patch_len=24)
    with torch_threads(available_cores()):
        wps = time_training(source, cpu, bf16=False, steps=args.steps, cfg=segmented)
    print(f"| cpu, patch_len 24 | {available_cores()} | fp32 | {wps:,.0f} | - | - |")
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        source = make_source(gpu)
        name = torch.cuda.get_device_name(gpu)
        for precision in ("fp32", "bf16"):
            bf16 = use_bf16(gpu, precision)
            wps = time_training(source, gpu, bf16=bf16, steps=args.steps * 5)
            print(f"| {name} | - | {precision} | {wps:,.0f} | {wps * train_flops / 1e9:.1f} | - |")


if __name__ == "__main__":
    main()
