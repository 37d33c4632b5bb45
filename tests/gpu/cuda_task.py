"""A real CUDA task for tests/gpu/check.sh: reports what the agent pinned and
proves it by using it. Run by loom-agent with python3 (PyTorch).

  cuda_task.py --expect N [--hold SECONDS] [--mem GIB]

Exits non-zero when the number of GPUs PyTorch can see is not N, or when
CUDA_VISIBLE_DEVICES / CUDA_DEVICE_ORDER are not what loom promises."""
import argparse
import os
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--expect", type=int, required=True)
p.add_argument("--hold", type=float, default=0.0)
p.add_argument("--mem", type=float, default=1.0)
a = p.parse_args()

vis = os.environ.get("CUDA_VISIBLE_DEVICES")
order = os.environ.get("CUDA_DEVICE_ORDER")
print(f"task={os.environ.get('LOOM_TASK')} CUDA_VISIBLE_DEVICES={vis!r} "
      f"NVIDIA_VISIBLE_DEVICES={os.environ.get('NVIDIA_VISIBLE_DEVICES')!r} "
      f"CUDA_DEVICE_ORDER={order!r}", flush=True)
bad = []
if vis is None:
    bad.append("CUDA_VISIBLE_DEVICES is not set on a GPU host")
elif len([x for x in vis.split(",") if x]) != a.expect:
    bad.append(f"CUDA_VISIBLE_DEVICES names {vis!r}, expected {a.expect} GPU(s)")
if order != "PCI_BUS_ID":
    bad.append(f"CUDA_DEVICE_ORDER is {order!r}, not PCI_BUS_ID")

import torch  # noqa: E402  (after the environment is printed)

n = torch.cuda.device_count()
print(f"torch {torch.__version__} sees {n} GPU(s)", flush=True)
if n != a.expect:
    bad.append(f"PyTorch sees {n} GPU(s), expected {a.expect}")
if a.expect and n:
    d = torch.device("cuda:0")
    print(f"device 0: {torch.cuda.get_device_name(0)} uuid={torch.cuda.get_device_properties(0).uuid}",
          flush=True)
    # hold GPU memory and do real work, so the agent's NVML sampling sees it
    ballast = torch.empty(int(a.mem * (1 << 30)), dtype=torch.uint8, device=d)
    x = torch.randn(4096, 4096, device=d, dtype=torch.bfloat16)
    t0 = time.time()
    print(f"START {time.time_ns()}", flush=True)
    k = 0
    while True:
        y = x @ x
        k += 1
        if k % 50 == 0:
            torch.cuda.synchronize()
            if time.time() - t0 >= a.hold:
                break
    torch.cuda.synchronize()
    dt = time.time() - t0
    print(f"END {time.time_ns()}", flush=True)
    print(f"{k} bf16 4096^3 products in {dt:.2f} s: {2 * 4096**3 * k / dt / 1e12:.0f} TFLOP/s "
          f"(checksum {float(y.float().abs().mean()):.3f})", flush=True)
    del ballast
if bad:
    for b in bad:
        print("FAIL: " + b, flush=True)
    sys.exit(1)
print("ok", flush=True)
