"""Byzantine-robust aggregation for torch.distributed: a DDP communication hook and a robust
all-reduce.

Every rank all-gathers the contributions of all ranks into a (world_size, L) matrix and applies
the same byzkern rule or ``Pipeline`` to it, on the tensor's own device (the CUDA kernels under
NCCL, the CPU kernels under gloo), so every rank computes the same update from the same rows:

    ddp.register_comm_hook(RobustHookState(bk.Pipeline(bk.nnm(f=1), bk.cwtm(f=1))), robust_hook)
    robust_all_reduce([p.grad for p in model.parameters()], bk.cwtm(f=1))   # without DDP

Modes of the hook (DDP cuts the gradient into buckets and calls the hook once per bucket):

- ``"bucket"``: each bucket is gathered and aggregated on its own, while backward goes on.
  Right for the coordinate-wise rules (mean, cwmed, cwtm, meamed), whose result on a bucket is
  the bucket's slice of their result on the whole gradient.
- ``"whole"``: the buckets of a step are held until the last one arrives, then the whole
  gradient is gathered and aggregated at once. Needed by every rule that looks at whole rows:
  distances (krum, multikrum, nnm), norms (geomed, cclip, norm_filter, clip), bucketing and
  resampling (one draw for all buckets). Costs the overlap of communication with backward.
  A stateful attack (``Mimic``) needs it too: it follows one gradient from step to step.
- ``"auto"`` (default): ``"bucket"`` when every stage is coordinate-wise and the attack, if
  any, keeps no state; else ``"whole"``.

Communication (``comm=``):

- ``"gather"`` (default): every rank gathers every row and runs the rule on all L coordinates.
  Each rank receives (world_size - 1) L values (a ring all-reduce: about 2 L) and holds
  world_size * L. Works for every rule.
- ``"sharded"``: for coordinate-wise rules only. Rank r receives coordinate shard r of every
  rank's row (``all_to_all``), aggregates that (world_size, L / world_size) block, and the shards
  are all-gathered back: about 2 L received per rank, as for a ring all-reduce, and 1/world_size
  of the rule's work. Each rank then trusts the others to aggregate their shard faithfully.

Threat model: Byzantine contributions from processes that follow the protocol (poisoned data,
faulty workers, or an injected ``attack`` in experiments): a Byzantine rank controls its own row
and each rank aggregates every row itself. A truly malicious process could also corrupt the rows
it relays inside a ring all-gather; that is outside this model.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from .. import _checks
from ..attacks import Mimic
from ..model import flatten, unflatten
from ..pipeline import Pipeline, Rule, accepts

# Rules whose output coordinate j depends only on the rows' coordinate j.
COORDINATEWISE = frozenset({"mean", "cwmed", "cwtm", "meamed"})
MODES = ("auto", "bucket", "whole")
COMMS = ("gather", "sharded")


def is_coordinatewise(pipeline):
    """True when every stage of ``pipeline`` (a Rule or a Pipeline) is a coordinate-wise rule."""
    stages = pipeline.stages if isinstance(pipeline, Pipeline) else (pipeline,)
    return all(isinstance(s, Rule) and s.name in COORDINATEWISE for s in stages)


class Reduction:
    """What one robust all-reduce does: the rule, the communication ``comm`` ("gather" or
    "sharded", see the module docstring), the process group, and in experiments the Byzantine
    ranks with their ``attack`` (any attack of SPEC §5, e.g. ``sign_flip(scale=-100)``).

    With an attack, every rank first all-gathers the true contributions; then each Byzantine
    rank sends its row of ``attack(H, f=len(byzantine_ranks))``, H the honest ranks' rows, with
    ``own=`` the Byzantine ranks' true rows when the attack takes ``own`` (the papers' omniscient
    attacker). A stateful attack (``Mimic``) is called once per aggregation on the Byzantine
    ranks only, so their randomness need not agree across ranks.
    """

    def __init__(self, pipeline, *, comm="gather", group=None, attack=None, byzantine_ranks=()):
        _checks.function(pipeline, "pipeline", "callable (a byzkern rule or Pipeline)")
        if attack is not None:
            _checks.function(attack, "attack", "callable (a byzkern attack)")
        ranks = tuple(_checks.integer(r, "byzantine_ranks[i]", low=0) for r in byzantine_ranks)
        if len(set(ranks)) != len(ranks):
            raise ValueError(f"byzantine_ranks must be distinct; got {ranks}")
        if bool(ranks) != (attack is not None):
            raise ValueError("give attack= and byzantine_ranks= together")
        self.comm = _checks.choice(comm, "comm", COMMS)
        if comm == "sharded" and not is_coordinatewise(pipeline):
            raise ValueError(f'comm="sharded" needs a coordinate-wise rule ({sorted(COORDINATEWISE)}); got {pipeline!r}')
        self.pipeline, self.group, self.attack, self.byzantine_ranks = pipeline, group, attack, ranks

    def __repr__(self):
        attack = f", attack={self.attack!r}, byzantine_ranks={self.byzantine_ranks}" if self.attack else ""
        return f"Reduction({self.pipeline!r}, comm={self.comm!r}{attack})"

    def launch(self, flat):
        """Start the robust all-reduce of the 1-D tensor ``flat``; a Future of the aggregate."""
        sent, world = self._sent(flat)
        if self.comm == "sharded":
            return self._sharded(sent, world)
        work, rows = _all_gather(sent, world, self.group, async_op=True)
        return work.get_future().then(lambda _: _on_device_of(rows, self.pipeline, rows))

    def __call__(self, flat):
        """The robust all-reduce of the 1-D tensor ``flat``, the rule run in the caller's thread,
        so that its errors (too few ranks for f, ...) come as they are, not wrapped by a Future."""
        sent, world = self._sent(flat)
        if self.comm == "sharded":
            return self._sharded(sent, world).wait()
        _, rows = _all_gather(sent, world, self.group, async_op=False)
        return _on_device_of(rows, self.pipeline, rows)

    def _sent(self, flat):
        """(what this rank contributes: ``flat``, or its Byzantine row; the world size)."""
        world = dist.get_world_size(self.group)
        return (self._attacked(flat, world) if self.attack is not None else flat), world

    def _sharded(self, flat, world):
        # Zero padding to world_size equal shards; the padded coordinates are cut off at the end.
        # The all_to_all and the rule run in the caller's thread, so the hook blocks backward
        # for them and only the final all-gather overlaps it; launching a collective from a
        # Future's callback would run it on the backend's completion thread, untested here.
        size = flat.numel()
        shard = -(-size // world)
        padded = flat.new_zeros(world * shard)
        padded[:size] = flat
        block = torch.empty_like(padded)
        dist.all_to_all_single(block, padded, group=self.group)
        work, shards = _all_gather(_on_device_of(block, self.pipeline, block.view(world, shard)), world, self.group,
                                   async_op=True)
        return work.get_future().then(lambda _: shards.view(-1)[:size])

    def _attacked(self, flat, world):
        if max(self.byzantine_ranks) >= world:
            raise ValueError(f"byzantine_ranks {self.byzantine_ranks} must be < world_size = {world}")
        _, rows = _all_gather(flat, world, self.group, async_op=False)
        rank = dist.get_rank(self.group)
        if rank not in self.byzantine_ranks:
            return flat
        honest = rows[[r for r in range(world) if r not in self.byzantine_ranks]]
        own = {"own": rows[list(self.byzantine_ranks)]} if accepts(self.attack, "own") else {}
        byzantine = _on_device_of(honest, self.attack, honest, f=len(self.byzantine_ranks), **own)
        return byzantine[self.byzantine_ranks.index(rank)]


def _on_device_of(tensor, fn, *args, **kwargs):
    """fn(*args, **kwargs) with ``tensor``'s CUDA device current: byzkern runs CUDA data on the
    current device, and a Future's callback may run on a thread where another one is current."""
    if not tensor.is_cuda:
        return fn(*args, **kwargs)
    with torch.cuda.device(tensor.device):
        return fn(*args, **kwargs)


def _all_gather(flat, world, group, *, async_op):
    """(work, rows): ``rows`` (world, L) receives every rank's ``flat``. gloo accepts only the
    flat output form, so the buffer is (world * L,) viewed as rows."""
    out = flat.new_empty(world * flat.numel())
    work = dist.all_gather_single(out, flat.contiguous(), group=group, async_op=async_op)
    return work, out.view(world, -1)


def robust_all_reduce(tensors, pipeline, group=None, *, comm="gather", attack=None, byzantine_ranks=()):
    """Replace ``tensors`` (a tensor or a list of them, e.g. the gradients) on every rank, in
    place, by ``pipeline`` applied to the (world_size, L) matrix of every rank's flattened
    tensors: the robust counterpart of ``all_reduce`` followed by a division by world_size.
    ``comm`` as in the module docstring, ``attack`` / ``byzantine_ranks`` as in
    :class:`Reduction`. Collective: every rank calls it. Cost: one all-gather of L values per
    rank (one more with an attack), one run of the rule.
    """
    tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
    if any(t is None for t in tensors):
        raise TypeError(f"tensors[{[t is None for t in tensors].index(True)}] is None: a parameter with no gradient "
                        f"(frozen, or unused this step); pass [p.grad for p in params if p.grad is not None], "
                        f"the same on every rank")
    flat, spec = flatten(tensors)
    out = Reduction(pipeline, comm=comm, group=group, attack=attack, byzantine_ranks=byzantine_ranks)(flat)
    with torch.no_grad():
        for t, piece in zip(tensors, unflatten(out, spec)):
            t.copy_(piece)


class RobustHookState(Reduction):
    """The state of :func:`robust_hook`: a :class:`Reduction` and the hook's ``mode``
    ("auto", "bucket" or "whole"; see the module docstring), plus the buckets held back in
    "whole" mode until the last bucket of the step arrives.
    """

    def __init__(self, pipeline, *, mode="auto", comm="gather", group=None, attack=None, byzantine_ranks=()):
        super().__init__(pipeline, comm=comm, group=group, attack=attack, byzantine_ranks=byzantine_ranks)
        mode = _checks.choice(mode, "mode", MODES)
        stateful = isinstance(attack, Mimic)
        if mode == "auto":
            mode = "bucket" if is_coordinatewise(pipeline) and not stateful else "whole"
        if mode == "bucket" and stateful:
            raise ValueError(f'{attack!r} keeps one state for the whole gradient, which mode="bucket" would hand it '
                             f'bucket by bucket (of other sizes): use mode="whole"')
        self.mode = mode
        self._held = []  # (bucket buffer, its Future) of this step, in "whole" mode

    def __repr__(self):
        return f"RobustHookState({super().__repr__()}, mode={self.mode!r})"


def robust_hook(state, bucket):
    """DDP communication hook: ``ddp.register_comm_hook(RobustHookState(rule), robust_hook)``.

    The bucket's gradients become the rule's aggregate of every rank's bucket ("bucket" mode)
    or the bucket's slice of the aggregate of every rank's whole gradient ("whole" mode),
    written into the bucket's own buffer: DDP reads a hook's result as if it started at offset
    0 of its storage, so a view into a larger aggregate would give wrong gradients.
    Whole mode returns an unfinished Future for each bucket but the last, and finishes them
    all once the last bucket's aggregate is known; this relies on DDP calling the hook for
    every bucket of a step, in order, before it waits on any Future.
    """
    if state.mode == "bucket":
        buffer = bucket.buffer()
        return state.launch(buffer).then(lambda aggregate: buffer.copy_(aggregate.value()))
    held = torch.futures.Future()
    state._held.append((bucket.buffer(), held))
    if not bucket.is_last():
        return held
    # DDP rebuilds its buckets after the first step, so nothing about them is kept across steps.
    buffers, futures = zip(*state._held)
    state._held = []
    sizes = [b.numel() for b in buffers]

    def hand_out(whole):
        try:
            pieces = whole.value().split(sizes)
        except Exception as exc:  # every held Future must finish, or DDP would wait forever
            for fut in futures:
                fut.set_exception(exc)
            return
        for buffer, fut, piece in zip(buffers, futures, pieces):
            fut.set_result(buffer.copy_(piece))

    state.launch(torch.cat(buffers)).then(hand_out)
    return futures[-1]
