"""The ranks of the torch.distributed tests: one gloo process group on loopback runs every
scenario, so the cost of starting the processes is paid once.

A small MLP learns a synthetic 4-class problem by full-batch gradient descent; each rank owns
its own shard. The last rank is Byzantine in the attacked scenarios: it sends -100 times its
gradient. Each rank records, after every step, the loss on an evaluation set common to all
ranks and a SHA-1 of its parameters' bytes (Python's hash() is salted per process).
"""
import hashlib
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import byzkern as bk
from byzkern.integrations.torch_ddp import RobustHookState, robust_all_reduce, robust_hook

FEATURES, HIDDEN, CLASSES, SHARD, STEPS, LR = 16, 64, 4, 128, 30, 0.5
ATTACK = dict(attack=bk.sign_flip(scale=-100.0))

# name -> (how gradients are combined, the rule, whether the last rank attacks, comm)
SCENARIOS = {
    "honest": ("ddp", None, False, None),
    "ddp_mean_attacked": ("ddp", None, True, None),
    "hook_mean_attacked": ("hook", bk.mean(), True, "gather"),
    "hook_cwtm": ("hook", bk.cwtm(f=1), True, "gather"),
    "hook_cwtm_sharded": ("hook", bk.cwtm(f=1), True, "sharded"),
    "hook_nnm_cwtm": ("hook", bk.Pipeline(bk.nnm(f=1), bk.cwtm(f=1)), True, "gather"),
    "hook_krum": ("hook", bk.krum(f=1), True, "gather"),
    "allreduce_mean_attacked": ("allreduce", bk.mean(), True, "gather"),
    "allreduce_cwtm": ("allreduce", bk.cwtm(f=1), True, "gather"),
    "allreduce_cwtm_sharded": ("allreduce", bk.cwtm(f=1), True, "sharded"),
    "allreduce_nnm_cwtm": ("allreduce", bk.Pipeline(bk.nnm(f=1), bk.cwtm(f=1)), True, "gather"),
}


def make_data(seed, rows):
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(FEATURES, CLASSES, generator=torch.Generator().manual_seed(1234))
    X = torch.randn(rows, FEATURES, generator=g)
    y = (X @ teacher + 0.5 * torch.randn(rows, CLASSES, generator=g)).argmax(dim=1)
    return X, y


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES))


def params_sha1(model):
    return hashlib.sha1(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy().tobytes()).hexdigest()


def train(rank, world, combine, rule, attacked, comm):
    X, y = make_data(rank, SHARD)
    X_eval, y_eval = make_data(10_000, 512)
    byzantine = dict(ATTACK, byzantine_ranks=(world - 1,)) if attacked else {}
    model = make_model()
    buckets = set()
    if combine == "allreduce":
        net = model
    else:
        # DDP closes a bucket once it passes the cap: a 0.5 kB cap gives one bucket per layer,
        # so "whole" mode really holds buckets back.
        net = DistributedDataParallel(model, bucket_cap_mb=0.0005)
        if combine == "hook":
            def counting_hook(state, bucket):
                buckets.add(bucket.index())
                return robust_hook(state, bucket)

            state = RobustHookState(rule, comm=comm, **byzantine)
            net.register_comm_hook(state, counting_hook)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    losses, hashes = [], []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(X), y)
        if combine == "ddp" and attacked and rank == world - 1:
            loss = -100.0 * loss  # the Byzantine rank's gradient through DDP's own all-reduce
        loss.backward()
        if combine == "allreduce":
            robust_all_reduce([p.grad for p in model.parameters()], rule, comm=comm, **byzantine)
        opt.step()
        with torch.no_grad():
            losses.append(float(torch.nn.functional.cross_entropy(model(X_eval), y_eval)))
        hashes.append(params_sha1(model))
    mode = state.mode if combine == "hook" else None
    return {"losses": losses, "hashes": hashes, "buckets": len(buckets), "mode": mode}


def too_few_ranks(world):
    """robust_all_reduce with f = world / 2, too many for cwtm on world rows, in each comm: the
    rule's own error (type and message) on every rank, then a good call that still runs."""
    errors = {}
    for comm in ("gather", "sharded"):
        try:
            robust_all_reduce(torch.ones(3), bk.cwtm(f=world // 2), comm=comm)
        except Exception as error:  # the test checks its type
            errors[comm] = (type(error).__name__, str(error))
    grad = torch.full((3,), float(dist.get_rank()))
    robust_all_reduce(grad, bk.cwmed())
    return {"errors": errors, "after": grad.tolist()}


def run_scenarios(rank, world, init_file, out_dir):
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        results = {name: train(rank, world, *how) for name, how in SCENARIOS.items()}
        results["too_few_ranks"] = too_few_ranks(world)
    finally:
        dist.destroy_process_group()
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
