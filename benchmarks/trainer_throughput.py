"""Training throughput of the built-in backend vs a bare PyTorch loop over the SAME model and data.

The backend's loop adds what a real run needs (weighted sampling, uint8→float normalisation per batch,
augmentation hooks, per-epoch bookkeeping); this measures what that costs. Both loops use the same
network, the same rows decoded into in-memory tensors, the same batch size and optimiser, in one process
(runs alternate; the median is reported). Target: backend / bare ≥ 0.9. On a shared machine wall
time follows other people's load: with one thread, samples per CPU-second is the steadier ratio.

    python benchmarks/trainer_throughput.py [--smoke-test] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from raypipe.backends.builtin import BuiltinTrainer
from raypipe.backends.builtin._config import ModelConfig, architecture_from_spec, data_from_spec, train_from_spec
from raypipe.backends.builtin._data import Normaliser, load_image_set, read_csv_rows
from raypipe.backends.builtin._engine import make_optimizer, resolve_runtime
from raypipe.backends.builtin._model import build_model
from raypipe.spec import nest_dotted
from raypipe.testing import make_tiny_workspace


def bench_spec(base: dict, epochs: int) -> dict:
    """The demo's architecture and HPs (embed_dec 30, 5 vectors, 4 difference blocks, batch 32),
    augmentation off so both loops do the same math."""
    return nest_dotted({
        "train.num_epochs": epochs, "train.validation_interval": epochs, "train.checkpoint_interval": epochs,
        "train.optim.lr": 5e-4, "model.classify.embedding_vectors": 5, "model.classify.embed_dec": 30,
        "model.classify.learnable_difference_modules": 4, "dataset.classify.batch_size": 32,
        "dataset.classify.fpratio_sampling": None,
    }, base)


def bare_loop(spec: dict, train_csv: Path, images_dir: Path, device: str, epochs: int, seed: int) -> tuple[float, float]:
    """(samples per wall second, per CPU second) of the plainest loop: pre-normalised float tensors,
    randperm batches, forward/backward/step."""
    runtime = resolve_runtime(device)
    dcfg, tcfg = data_from_spec(spec), train_from_spec(spec)
    data = load_image_set(read_csv_rows(train_csv), images_dir, dcfg).to(runtime.device)
    norm = Normaliser(dcfg, runtime.device)
    cap_all, gold_all = norm(data.bank[data.capture]), norm(data.bank[data.golden])  # (N, L, 3, H, W) floats
    model = build_model(ModelConfig.from_architecture(architecture_from_spec(spec)), seed=seed).to(runtime.device)
    opt = make_optimizer(list(model.parameters()), tcfg)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(tcfg.cls_weight, device=runtime.device))
    gen = torch.Generator().manual_seed(seed)
    n, bs = len(data), dcfg.batch_size
    model.train()
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(runtime.device)
        for s in range(0, n, bs):
            idx = order[s:s + bs]
            with runtime.autocast():
                logits = model(cap_all[idx], gold_all[idx])
            loss = loss_fn(logits.float(), data.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    return n * epochs / (time.perf_counter() - t0), n * epochs / (time.process_time() - c0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke-test", action="store_true", help="tiny data, 1 repeat (seconds)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (a 1-CPU trial by default)")
    ap.add_argument("--rows", type=int, default=None, help="training rows (default 600; smoke 48)")
    ap.add_argument("--size", type=int, default=None, help="image size (default 64; smoke 32)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per measurement (default 2; smoke 1)")
    ap.add_argument("--repeats", type=int, default=None, help="alternating measurements (default 3; smoke 1)")
    args = ap.parse_args(argv)
    rows = args.rows or (48 if args.smoke_test else 600)
    size = args.size or (32 if args.smoke_test else 64)
    epochs = args.epochs or (1 if args.smoke_test else 2)
    repeats = args.repeats or (1 if args.smoke_test else 3)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="trainer_throughput_") as tmp:
        ws = make_tiny_workspace(Path(tmp) / "ws", n_train=rows, n_val=16, size=size, defect_rate=0.1)
        spec = bench_spec(ws.spec, epochs)
        trainer = BuiltinTrainer(device=args.device, num_threads=args.threads)
        # Warm-up of both loops (not timed): the first optimiser imports torch._dynamo (~2 s), and the
        # first batch of each shape creates its oneDNN/cuDNN primitives.
        warm = nest_dotted({"train.num_epochs": 1}, spec)
        bare_loop(warm, ws.train_csv, ws.images_dir, args.device, 1, 0)
        trainer.train(warm, ws.train_csv, ws.val_csv, Path(tmp) / "warmup", images_dir=ws.images_dir, seed=0)
        bare, backend, end_to_end, bare_cpu, backend_cpu = [], [], [], [], []
        for r in range(repeats):
            wall, cpu = bare_loop(spec, ws.train_csv, ws.images_dir, args.device, epochs, r)
            bare.append(wall)
            bare_cpu.append(cpu)
            t0 = time.perf_counter()
            res = trainer.train(spec, ws.train_csv, ws.val_csv, Path(tmp) / f"run{r}", images_dir=ws.images_dir, seed=r)
            end_to_end.append(rows * epochs / (time.perf_counter() - t0))
            backend.append(res.extra["train_samples_per_s"])
            backend_cpu.append(res.extra["train_samples_per_cpu_s"])
    out = {
        "device": str(resolve_runtime(args.device).device), "threads": args.threads, "rows": rows, "image_size": size,
        "epochs": epochs, "repeats": repeats, "batch_size": 32,
        "bare_samples_per_s": statistics.median(bare), "backend_samples_per_s": statistics.median(backend),
        "backend_end_to_end_samples_per_s": statistics.median(end_to_end),
        "bare_samples_per_cpu_s": statistics.median(bare_cpu), "backend_samples_per_cpu_s": statistics.median(backend_cpu),
        "runs": {"bare": bare, "backend": backend, "bare_cpu": bare_cpu, "backend_cpu": backend_cpu},
    }
    out["ratio"] = out["backend_samples_per_s"] / out["bare_samples_per_s"]
    out["ratio_cpu"] = out["backend_samples_per_cpu_s"] / out["bare_samples_per_cpu_s"]
    print(f"device {out['device']}, {args.threads} thread(s), {rows} rows {size}x{size}, {epochs} epoch(s) x {repeats}")
    print(f"  bare PyTorch loop       {out['bare_samples_per_s']:8.1f} samples/s")
    print(f"  BuiltinTrainer loop     {out['backend_samples_per_s']:8.1f} samples/s   ratio {out['ratio']:.2f} (target >= 0.9)")
    print(f"  per CPU-second (load-independent with 1 thread): bare {out['bare_samples_per_cpu_s']:.1f}, "
          f"backend {out['backend_samples_per_cpu_s']:.1f}, ratio {out['ratio_cpu']:.2f}")
    print(f"  BuiltinTrainer.train()  {out['backend_end_to_end_samples_per_s']:8.1f} samples/s end to end "
          "(decode, validation, checkpoints included)")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
