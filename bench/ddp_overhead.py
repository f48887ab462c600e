"""Overhead of byzkern's robust DDP hook per training step, beside DDP's default all-reduce.

    python bench/ddp_overhead.py                      # 10M parameters, 4 gloo ranks on loopback
    python bench/ddp_overhead.py --params 1e6 --world 2 --steps 3

One process group runs every combination on the same MLP (two Linear layers of about
params / 2 weights each) and a batch of 32, so the step is mostly communication plus
aggregation. Each rank uses --threads threads for torch and byzkern's kernels. Prints, per
combination, the median step time over --steps timed steps (after 2 warm-up steps; the slowest
rank's time per step) and its ratio to the default all-reduce. Not a test: no targets.
"""
import argparse
import os
import statistics
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import byzkern as bk
from byzkern.integrations.torch_ddp import RobustHookState, robust_all_reduce, robust_hook

WARMUP = 2


def combinations(f):
    """name -> (how gradients are combined, the rule, comm)."""
    return {
        "DDP default all-reduce (mean)": ("ddp", None, None),
        "hook, bucket mode: cwtm": ("hook", bk.cwtm(f=f), "gather"),
        "hook, bucket, sharded: cwtm": ("hook", bk.cwtm(f=f), "sharded"),
        "hook, bucket mode: cwmed": ("hook", bk.cwmed(), "gather"),
        "hook, whole mode: nnm + cwtm": ("hook", bk.Pipeline(bk.nnm(f=f), bk.cwtm(f=f)), "gather"),
        "hook, whole mode: krum": ("hook", bk.krum(f=f), "gather"),
        "robust_all_reduce: cwtm": ("allreduce", bk.cwtm(f=f), "gather"),
    }


def make_model(params):
    width = 1000
    hidden = max(1, int(params) // (2 * width))
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, width))


def step_times(model, combine, rule, comm, steps):
    X = torch.randn(32, model[0].in_features)
    net = model
    if combine != "allreduce":
        net = DistributedDataParallel(model)
        if combine == "hook":
            net.register_comm_hook(RobustHookState(rule, comm=comm), robust_hook)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    times = []
    for i in range(WARMUP + steps):
        dist.barrier()
        start = time.perf_counter()
        opt.zero_grad()
        net(X).square().mean().backward()
        if combine == "allreduce":
            robust_all_reduce([p.grad for p in model.parameters()], rule, comm=comm)
        opt.step()
        elapsed = torch.tensor(time.perf_counter() - start, dtype=torch.float64)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        if i >= WARMUP:
            times.append(float(elapsed))
    return statistics.median(times)


def run_rank(rank, world, init_file, args):
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=600))
    rows = []
    for name, (combine, rule, comm) in combinations(args.f).items():
        model = make_model(args.params)
        rows.append((name, step_times(model, combine, rule, comm, args.steps)))
    n_params = sum(p.numel() for p in model.parameters())
    if rank == 0:
        base = rows[0][1]
        print(f"{n_params:,} parameters, {world} gloo ranks, {args.threads} thread(s) each, "
              f"median of {args.steps} steps")
        print(f"{'combination':<34} {'s/step':>8} {'x default':>10}")
        for name, t in rows:
            print(f"{name:<34} {t:>8.3f} {t / base:>10.2f}")
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=float, default=1e7)
    parser.add_argument("--world", type=int, default=4)
    parser.add_argument("--f", type=int, default=1, help="Byzantine ranks the rules tolerate")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(run_rank, nprocs=args.world, join=True,
                                    args=(args.world, os.path.join(tmp, "init"), args))


if __name__ == "__main__":
    main()
