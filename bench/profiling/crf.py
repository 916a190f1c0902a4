"""Speed of the permutohedral lattice filter and the CRF losses (`python -m bench profile crf`).

CPU: our op (one lattice, all K channels in one pass) against the papers' way (one filtering per
class: K calls of the op on one channel each, so the lattice is rebuilt K times), 1 thread
against 2 threads, and the bytes-moved floor (features + values read once, output written
once), the time of each phase of the CPU kernel (`lattice_filter_phases`), and the kernel side by
side with the one of git commit e524025 (the previous CPU kernel, built here into a scratch folder
under its own op namespace, timed in the same run). CUDA: the issue's sizes for crf_loss forward+backward, the 512x512 K=21 filter and the
joint colour CRF of CoLo-CAM.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from bench.losses.crf import crf_features, crf_loss, multiframe_color_crf_loss
from bench.ops.lattice_filter import lattice_filter_op
from bench.profiling import ProfileTable, register_profile, time_breakdown, time_fn

SIZES = {"small": 64, "mid": 256, "full": 512}
PREV_COMMIT = "e524025"  # the CPU kernel before the packed-key lattice
PREV_NAMESPACE = "wsolbench_prev"
PHASES = ("range", "embed", "insert", "compact", "neighbours", "splat", "blur", "slice")


def natural_like_images(B: int, H: int, W: int, device, seed: int = 0) -> torch.Tensor:
    """Smooth colour blobs plus mild noise, 0-255: few lattice points per pixel, as on photos."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(B, 3, max(2, H // 32), max(2, W // 32), generator=g) * 255
    img = F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
    img = img + torch.randn(B, 3, H, W, generator=g) * 3
    return img.clamp(0, 255).round().to(device)


def _best_ms(fn, device, repeat: int) -> float:
    """Fastest of `repeat` calls (ms): on a shared, oversubscribed machine the median mostly
    measures how long the other OpenMP thread waited to be scheduled."""
    import time

    if device.type != "cpu":
        return time_fn(fn, device, warmup=1, repeat=repeat)
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


def _with_threads(n: int, fn):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(old)


def prev_lattice_op(commit: str = PREV_COMMIT) -> tuple[Optional[Callable], str]:
    """The CPU lattice_filter of git `commit`, as `torch.ops.wsolbench_prev.lattice_filter`
    (same arguments), built once with torch.utils.cpp_extension.load into
    $WSOLBENCH_PREV_LATTICE_DIR (default ~/.cache/wsolbench/prev_lattice) and reused.
    Returns (op, note); op is None and the note says why when it cannot be built."""
    ns = getattr(torch.ops, PREV_NAMESPACE)
    if hasattr(ns, "lattice_filter"):
        return ns.lattice_filter, f"previous kernel: git {commit}, already loaded"
    root = Path(__file__).resolve().parents[2]
    cache = Path(os.environ.get("WSOLBENCH_PREV_LATTICE_DIR", Path.home() / ".cache" / "wsolbench" / "prev_lattice"))
    files = {"csrc/cpu/lattice_filter.cpp": "cpu/lattice_filter_kernel.cpp",
             "csrc/ops/lattice_filter.cpp": "ops/lattice_filter_schema.cpp",
             "csrc/ops/lattice_filter.h": "ops/lattice_filter.h"}
    try:
        src = cache / commit
        for path, dest in files.items():
            text = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{path}"], check=True,
                                  capture_output=True, text=True, timeout=60).stdout
            # its own op namespace (and C++ namespace), so both kernels load in one process
            text = text.replace("wsolbench", PREV_NAMESPACE)
            out = src / dest
            out.parent.mkdir(parents=True, exist_ok=True)
            if not out.exists() or out.read_text() != text:
                out.write_text(text)
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", "") or err
        return None, f"previous kernel (git {commit}) not compared: its sources could not be read ({str(detail).strip()[:200]})"
    try:
        from torch.utils.cpp_extension import load

        build = cache / f"build-{commit}"
        build.mkdir(parents=True, exist_ok=True)
        load(name=f"{PREV_NAMESPACE}_lattice", sources=[str(src / files["csrc/cpu/lattice_filter.cpp"]),
                                                         str(src / files["csrc/ops/lattice_filter.cpp"])],
             extra_cflags=["-O3", "-std=c++17", "-fopenmp"], extra_ldflags=["-fopenmp"], build_directory=str(build),
             is_python_module=False, verbose=False)
    except Exception as err:  # noqa: BLE001 - no compiler, no ninja, a failed build: say so, do not crash
        return None, f"previous kernel (git {commit}) not compared: building it failed ({str(err).strip()[:300]})"
    return ns.lattice_filter, f"previous kernel: git {commit} built into {cache}"


def _interleaved_ms(fns: dict, repeat: int) -> dict:
    """Best and median wall time (ms) of each function, called in turn in every round so that
    the load of a shared machine falls on all of them alike."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def _prev_rows(size: str, repeat: int) -> tuple[list[dict], list[str]]:
    """This kernel against the previous one, same inputs, same run: forward at K=2 and K=21,
    1 and 2 threads, a batch and a single image; and crf_loss forward+backward against the
    previous kernel's forward alone."""
    prev, note = prev_lattice_op()
    notes = [note]
    if prev is None:
        return [], notes
    if size == "small":
        cases = [(4, 64, 2), (4, 64, 21), (1, 128, 2)]
        big = (1, 128)
    else:
        cases = [(32, 224, 2), (32, 224, 21), (1, 224, 2), (1, 512, 2)]
        big = (1, 512)
    rows = []
    cur = torch.ops.wsolbench.lattice_filter
    for B, side, K in cases:
        images = natural_like_images(B, side, side, "cpu")
        feat = crf_features(images, 15.0, 100.0, torch.float32)
        values = torch.rand(B, K, side * side, generator=torch.Generator().manual_seed(1))
        ref = prev(feat, values, None, False, False, False)
        diff = ((cur(feat, values, None, False, False, False) - ref).abs().max() / ref.abs().max()).item()
        for nt in (1, 2):
            t = _with_threads(nt, lambda: _interleaved_ms({
                "new": lambda: cur(feat, values, None, False, False, False),
                "old": lambda: prev(feat, values, None, False, False, False)}, repeat))
            rows.append({"case": f"forward {B}x{side}x{side} K={K}", "threads": nt,
                         "new ms (best)": round(t["new"][0], 2), "new ms (median)": round(t["new"][1], 2),
                         "old ms (best)": round(t["old"][0], 2), "old ms (median)": round(t["old"][1], 2),
                         "old / new (best)": round(t["old"][0] / t["new"][0], 2),
                         "old / new (median)": round(t["old"][1] / t["new"][1], 2),
                         "max rel diff": f"{diff:.1e}"})
    # the loss: one symmetric call (energy and exact gradient) against the old forward alone
    B, side = cases[0][0], cases[0][1]
    images = natural_like_images(B, side, side, "cpu")
    probs = torch.softmax(torch.randn(B, 2, side, side, generator=torch.Generator().manual_seed(2)), 1)
    probs.requires_grad_(True)
    feat = crf_features(images, 15.0, 100.0, torch.float32)
    seg = probs.detach().reshape(B, 2, side * side).contiguous()
    for nt in (1, 2):
        t = _with_threads(nt, lambda: _interleaved_ms({
            "loss": lambda: crf_loss(images, probs).backward(),
            "old": lambda: prev(feat, seg, None, False, False, False)}, repeat))
        rows.append({"case": f"crf_loss fwd+bwd {B}x{side}x{side} K=2 (new) vs old forward only", "threads": nt,
                     "new ms (best)": round(t["loss"][0], 2), "new ms (median)": round(t["loss"][1], 2),
                     "old ms (best)": round(t["old"][0], 2), "old ms (median)": round(t["old"][1], 2),
                     "old / new (best)": round(t["old"][0] / t["loss"][0], 2),
                     "old / new (median)": round(t["old"][1] / t["loss"][1], 2), "max rel diff": "-"})
    notes.append(f"best and median of {repeat} rounds, both kernels called in turn in every round; old / new > 1: "
                 "the new kernel is faster; max rel diff: max |new - old| / max |old| (float rounding)")
    notes.append(f"{big[0]}x{big[1]}x{big[1]}: one image, so 2 threads share it; on an idle machine the 2-thread "
                 "time is about half the 1-thread time, on a loaded one every barrier waits for a descheduled thread")
    return rows, notes


def _phase_rows(size: str, repeat: int) -> list[dict]:
    """Per-phase time of the CPU kernel (`lattice_filter_phases`), the fastest of `repeat` runs."""
    cases = ([(2, 64, 2, 1, False), (1, 128, 2, 2, False), (2, 64, 2, 1, True)] if size == "small" else
             [(32, 224, 2, 1, False), (32, 224, 2, 2, False), (32, 224, 21, 2, False), (32, 224, 2, 2, True),
              (1, 224, 2, 1, False), (1, 224, 2, 2, False), (1, 512, 2, 1, False), (1, 512, 2, 2, False)])
    rows = []
    for B, side, K, nt, sym in cases:
        images = natural_like_images(B, side, side, "cpu")
        feat = crf_features(images, 15.0, 100.0, torch.float32)
        values = torch.rand(B, K, side * side, generator=torch.Generator().manual_seed(1))

        def run():
            t0 = time.perf_counter()
            _, ph = torch.ops.wsolbench.lattice_filter_phases(feat, values, None, False, False, sym)
            return (time.perf_counter() - t0) * 1e3, ph

        best = None
        _with_threads(nt, run)
        for _ in range(repeat):
            wall, ph = _with_threads(nt, run)
            if best is None or wall < best[0]:
                best = (wall, ph)
        row = {"case": f"{B}x{side}x{side} K={K}{' symmetric' if sym else ''}", "threads": nt,
               "wall ms": round(best[0], 2)}
        row.update({f"{name} ms": round(float(v), 2) for name, v in zip(PHASES, best[1].tolist())})
        rows.append(row)
    return rows


def _filter_rows(device: torch.device, side: int, classes, threads, repeat: int) -> tuple[list[dict], dict]:
    images = natural_like_images(1, side, side, device)
    feat = crf_features(images, 15.0, 100.0, torch.float32)
    N = side * side
    rows, by_key = [], {}
    for K in classes:
        values = torch.rand(1, K, N, device=device)
        for nt in threads:
            op = lambda: lattice_filter_op(feat, values)  # noqa: E731
            loop = lambda: [lattice_filter_op(feat, values[:, k : k + 1].contiguous()) for k in range(K)]  # noqa: E731
            t_op = _with_threads(nt, lambda: time_fn(op, device, warmup=1, repeat=repeat))
            t_loop = _with_threads(nt, lambda: time_fn(loop, device, warmup=1, repeat=repeat))
            b_op = _with_threads(nt, lambda: _best_ms(op, device, repeat))
            b_loop = _with_threads(nt, lambda: _best_ms(loop, device, max(1, repeat // 2)))
            floor_bytes = 4 * N * (5 + 2 * K)
            by_key[(K, nt)] = (t_op, t_loop, b_op, b_loop)
            rows.append({
                "image": f"{side}x{side}", "K": K, "threads": nt if device.type == "cpu" else "-",
                "op ms": round(t_op, 2), "per-class loop ms": round(t_loop, 2),
                "loop / op": round(t_loop / t_op, 2),
                "op ms (best)": round(b_op, 2), "loop ms (best)": round(b_loop, 2),
                "op ms per thread-class": round(t_op * (nt if device.type == "cpu" else 1) / K, 3),
                "floor MB": round(floor_bytes / 1e6, 2),
                "effective GB/s": round(floor_bytes / (t_op * 1e-3) / 1e9, 3),
            })
    return rows, by_key


def _energy_rows(device: torch.device, size: str, repeat: int) -> list[dict]:
    """crf_loss forward+backward as the harness computes it (one symmetric filtering in the
    forward, kept for the backward) against the two-lattice way (W S in the forward, autograd
    through the op's adjoint W^T in the backward), on the same inputs, side by side."""
    B, H = {("cuda", "full"): (32, 224), ("cpu", "full"): (8, 112)}.get((device.type, size), (2, 64))
    images = natural_like_images(B, H, H, device)
    probs = torch.softmax(torch.randn(B, 2, H, H, device=device), 1).requires_grad_(True)

    def one_lattice():
        crf_loss(images, probs).backward()

    def two_lattices():
        feat = crf_features(images, 15.0, 100.0, probs.dtype)
        seg = probs.reshape(B, 2, H * H)
        (-2e-9 * (seg * lattice_filter_op(feat, seg.contiguous())).sum() / B).backward()

    rows = []
    for label, fn in (("one symmetric filtering (crf_loss)", one_lattice), ("filter + adjoint in backward", two_lattices)):
        rows.append({"crf_loss fwd+bwd": label, "case": f"{B}x3x{H}x{H} K=2", "ms": round(_best_ms(fn, device, repeat), 3)})
    for row in rows:
        row["ratio to crf_loss"] = round(row["ms"] / rows[0]["ms"], 2)
    return rows


@register_profile("crf")
def profile_crf(device: torch.device, size: str = "small") -> list[ProfileTable]:
    device = torch.device(device)
    side = SIZES.get(size, SIZES["small"])
    repeat = 3 if size == "small" else 5
    tables = []
    threads = (1, 2) if device.type == "cpu" else (1,)
    rows, t = _filter_rows(device, side, (2, 21), threads, repeat)
    notes = [
        "op: one lattice per image, all K channels filtered in one pass; per-class loop: K calls "
        "with one channel each (the papers' way, the lattice is rebuilt K times)",
        "floor: features (5 x float32) and values read once, output written once",
    ]
    if device.type == "cpu":
        for K in (2, 21):
            s = t[(K, 1)][0] / t[(K, 2)][0]
            sb = t[(K, 1)][2] / t[(K, 2)][2]
            notes.append(f"K={K}: 2 threads {s:.2f}x faster than 1 (median), {sb:.2f}x (best); op vs loop "
                         f"at 1 thread {t[(K, 1)][1] / t[(K, 1)][0]:.2f}x (median), "
                         f"{t[(K, 1)][3] / t[(K, 1)][2]:.2f}x (best)")
        notes.append("2-thread medians are only meaningful on an idle machine: when the cores are "
                     "oversubscribed every OpenMP barrier waits for a descheduled thread")
    tables.append(ProfileTable(f"lattice_filter on {device.type}: op vs per-class loop", rows, notes))
    if device.type == "cpu" and hasattr(torch.ops.wsolbench, "lattice_filter_phases"):
        tables.append(ProfileTable(
            "lattice_filter CPU phases (ms)", _phase_rows(size, repeat),
            ["the fastest of the runs; one image per thread (batch >= threads): phase times summed over images and "
             "threads (thread time); one team per image (a batch of 1): wall time of each phase, summed over images",
             "range: feature bounds (the packed key layout); embed: simplex and barycentric weights (float64); "
             "insert: vertex keys into the hash table; compact: dense ids; neighbours: 2 (d+1) per lattice point; "
             "splat, blur (both orders when symmetric), slice"]))
        rows_prev, notes_prev = _prev_rows(size, repeat)
        tables.append(ProfileTable(f"lattice_filter CPU: this kernel (new) vs git {PREV_COMMIT} (old), same run",
                                   rows_prev, notes_prev))
    tables.append(ProfileTable(f"crf_loss forward+backward on {device.type}: one lattice or two",
                               _energy_rows(device, size, repeat),
                               [f"best of {repeat} runs; {torch.get_num_threads() if device.type == 'cpu' else '-'} "
                                "CPU threads; photo-like images; the same images and maps in both rows"]))

    if device.type == "cuda":
        B, H = (32, 224) if size == "full" else (2, 64)
        images = natural_like_images(B, H, H, device)
        probs = torch.softmax(torch.randn(B, 2, H, H, device=device), 1).requires_grad_(True)

        def fwd_bwd():
            crf_loss(images, probs).backward()

        side_f = 512 if size == "full" else 64
        img1 = natural_like_images(1, side_f, side_f, device)
        feat1 = crf_features(img1, 15.0, 100.0, torch.float32)
        v21 = torch.rand(1, 21, side_f * side_f, device=device)
        S, n, Hf = (32, 4, 224) if size == "full" else (4, 4, 32)
        frames = natural_like_images(S * n, Hf, Hf, device).view(S, n, 3, Hf, Hf)
        fprobs = torch.softmax(torch.randn(S, n, 2, Hf, Hf, device=device), 2).requires_grad_(True)

        def joint():
            multiframe_color_crf_loss(frames, fprobs).backward()

        rows = [
            {"case": f"crf_loss fwd+bwd {B}x3x{H}x{H} K=2", "ms": round(time_fn(fwd_bwd, device), 3)},
            {"case": f"lattice_filter {side_f}x{side_f} K=21",
             "ms": round(time_fn(lambda: lattice_filter_op(feat1, v21), device), 3)},
            {"case": f"joint colour CRF fwd+bwd {S} shots x {n} frames {Hf}x{Hf} K=2",
             "ms": round(time_fn(joint, device), 3)},
        ]
        tables.append(ProfileTable("CRF losses on CUDA", rows, []))
        tables.append(ProfileTable(f"Where crf_loss fwd+bwd {B}x3x{H}x{H} K=2 spends its time (CUDA)",
                                   time_breakdown(fwd_bwd, device),
                                   ["torch.profiler over 5 runs after 1 warm-up; device time of each kernel, memset "
                                    "and copy per run (the top 12); share of the device time of all of them"]))
        tables.append(ProfileTable(f"Where the joint colour CRF fwd+bwd {S} shots x {n} frames spends its time (CUDA)",
                                   time_breakdown(joint, device), ["as above"]))
    return tables


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys

    for table in profile_crf(torch.device(sys.argv[1] if len(sys.argv) > 1 else "cpu"),
                             sys.argv[2] if len(sys.argv) > 2 else "small"):
        print(f"\n== {table.title}")
        keys = list(table.rows[0].keys())
        print(" | ".join(keys))
        for row in table.rows:
            print(" | ".join(str(row[k]) for k in keys))
        for note in table.notes:
            print(f"  - {note}")
