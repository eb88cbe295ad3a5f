"""Multi-process training on ``torch.distributed``: process group, launch, and the few collectives we need.

Processes are started by ``torchrun`` (one per GPU, any number of machines), which describes the
job in environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``), or by :func:`spawn_local` for users who type the original's
``-d '(0,1)'``. Everything else in the package asks this module instead of reading the
environment, and every helper is a no-op in a single process, so the single-process code path
is the distributed one with a world of one.

Failure policy: a collective that cannot complete (a peer died, or hangs) must not hang the
others forever. The process group gets a finite timeout (``--dist_timeout``), and the errors
torch raises when a peer vanishes are turned into one :class:`BpmError` line by
:func:`peer_failures_as_errors`.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import socket
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist

from bpm.errors import BpmError, one_line
from bpm.precision import resolve_device
from bpm.threads import share_cores_between_ranks

DEFAULT_TIMEOUT_S = 1800.0
"""How long any collective waits for the slowest rank before giving up (``--dist_timeout``)."""

PER_PROCESS_SWITCHES = frozenset({"data_root", "workers"})
"""Switches allowed to differ between ranks: paths and loader workers are machine-local; the
dataset's content is compared separately (:func:`records_digest`)."""


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job; ``world_size == 1`` means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise BpmError(f"environment variable {name}: expected a whole number, got {text!r}") from exc


def launched_distributed() -> bool:
    """True inside a multi-process job (torchrun or :func:`spawn_local` set ``WORLD_SIZE`` > 1)."""
    return _env_int("WORLD_SIZE", 1) > 1


def wants_local_spawn(sys_device_ids: Sequence[int]) -> bool:
    """``-d '(0,1,...)'`` outside torchrun: this process must start one worker per id."""
    return len(sys_device_ids) > 1 and not launched_distributed()


def device_for_rank(sys_device_ids: Sequence[int], local_rank: int) -> torch.device:
    """This rank's device in a multi-process job.

    ``()`` keeps every rank on the CPU; several ids map local rank i to id i. A single id (the
    default ``(0,)``) under a multi-process launcher means "one GPU per process", i.e.
    ``cuda:LOCAL_RANK``, which is what torchrun users expect without passing ``-d``.
    """
    ids = tuple(sys_device_ids)
    if len(ids) == 1:
        return resolve_device((local_rank,))
    return resolve_device(ids, local_rank)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init(sys_device_ids: Sequence[int], timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Pick this rank's device and, in a multi-process job, join the process group.

    Single process: returns the context for ``resolve_device(-d)`` without touching
    ``torch.distributed``.
    """
    if not timeout_s > 0:
        raise BpmError(f"--dist_timeout: expected a positive number of seconds, got {timeout_s}")
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistContext(device=resolve_device(tuple(sys_device_ids)), timeout_s=timeout_s)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world_size = _env_int("LOCAL_WORLD_SIZE", world_size)
    if not (0 <= rank < world_size and 0 <= local_rank < local_world_size):
        raise BpmError(f"RANK={rank}/LOCAL_RANK={local_rank} out of range for WORLD_SIZE={world_size}")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise BpmError(f"environment variable {name} is not set; start multi-process runs with torchrun")
    device = device_for_rank(sys_device_ids, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        share_cores_between_ranks(local_world_size)
    try:
        dist.init_process_group(
            backend_for(device), rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    except (RuntimeError, ValueError) as exc:
        raise BpmError(
            f"rank {rank}: could not join the process group at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} "
            f"within {timeout_s:g}s ({one_line(exc)}); check that every node runs the same torchrun command"
        ) from exc
    ctx = DistContext(rank, world_size, local_rank, local_world_size, device, timeout_s)
    barrier(ctx)
    return ctx


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank; on gloo a monitored barrier names the ranks that did not arrive."""
    if not ctx.enabled:
        return
    if dist.get_backend() == "gloo":
        dist.monitored_barrier(timeout=datetime.timedelta(seconds=ctx.timeout_s), wait_all_ranks=True)
    else:
        dist.barrier()


def _looks_like_peer_failure(exc: BaseException) -> bool:
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return any(word in text for word in (
        "gloo", "nccl", "connection closed", "connection reset", "timed out", "timeout", "broken pipe",
        "monitoredbarrier", "peer", "socket",
    ))


@contextlib.contextmanager
def peer_failures_as_errors(ctx: DistContext) -> Iterator[None]:
    """Turn the errors of a collective whose peers died or hung into one clear BpmError line."""
    try:
        yield
    except BpmError:
        raise
    except RuntimeError as exc:
        if not ctx.enabled or not _looks_like_peer_failure(exc):
            raise
        raise BpmError(
            f"rank {ctx.rank}/{ctx.world_size}: lost contact with the other ranks ({one_line(exc)}); another "
            f"rank probably failed (see its error), or did not answer within --dist_timeout {ctx.timeout_s:g}s"
        ) from exc


@contextlib.contextmanager
def stdout_on_main_only(ctx: DistContext) -> Iterator[None]:
    """Silence ``print`` on ranks other than 0 (N copies of every line help nobody); stderr stays."""
    if ctx.is_main:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


# --------------------------------------------------------------------------------------------
# Consistency checks


def check_same_across_ranks(ctx: DistContext, values: dict[str, object], what: str) -> None:
    """Raise on every rank if ``values`` differ between ranks, naming the keys that differ.

    Runs once at start; ranks that silently disagree on a switch (a different learning rate, a
    different dataset on one node) would train a model nobody asked for.
    """
    if not ctx.enabled:
        return
    mine = {key: repr(value) for key, value in sorted(values.items())}
    digest = hashlib.sha256(repr(mine).encode()).hexdigest()
    digests: list[str] = [""] * ctx.world_size
    dist.all_gather_object(digests, digest)
    if len(set(digests)) == 1:
        return
    everyone: list[dict] = [{}] * ctx.world_size
    dist.all_gather_object(everyone, mine)
    reference = everyone[0]
    differing = []
    for key in sorted(set().union(*everyone)):
        odd = [r for r, other in enumerate(everyone) if other.get(key) != reference.get(key)]
        if odd:
            differing.append(f"{key} (rank 0: {reference.get(key, 'missing')}, rank {odd[0]}: "
                             f"{everyone[odd[0]].get(key, 'missing')})")
    raise BpmError(f"{what} differ between ranks: {'; '.join(differing)}; every rank must get the same command line")


def switches_for_check(switches: Mapping[str, object]) -> dict[str, object]:
    """The switches every rank must agree on (all but the per-process ones)."""
    return {k: v for k, v in switches.items() if k not in PER_PROCESS_SWITCHES}


def records_digest(records: Sequence) -> str:
    """A short fingerprint of a record list (file name, pid, camera), independent of the data root."""
    h = hashlib.sha256()
    for record in records:
        h.update(f"{os.path.basename(record.path)}|{record.pid}|{record.camid}\n".encode())
    return f"{len(records)} records, {h.hexdigest()[:16]}"


def broadcast_object(ctx: DistContext, obj: object) -> object:
    """Rank 0's ``obj`` on every rank (e.g. the sampler seed, drawn at random when not set)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# --------------------------------------------------------------------------------------------
# Training collectives


class _GatherGlobalBatch(torch.autograd.Function):
    """All-gather whose backward relies on every rank computing the SAME loss from the result.

    Then every rank's upstream gradient is the same global-batch gradient, so the gradient of
    the local rows is just its slice of it: no collective in the backward pass. It is scaled by
    ``world_size`` because DDP divides the summed parameter gradients by ``world_size``.
    """

    @staticmethod
    def forward(ctx, local: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        parts = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(parts, local.contiguous())
        ctx.rows, ctx.rank, ctx.world_size = local.shape[0], rank, world_size
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows] * ctx.world_size, None, None


def gather_for_mining(
    ctx: DistContext, features: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch's features and labels, in rank order, with gradients for the local part.

    The sampler gives each rank a contiguous, equal slice of the global batch, so rank order is
    the single-process batch order, and every rank then mines over the whole P x K batch with
    the single-process loss and (after DDP's averaging) the single-process gradient.
    """
    if not ctx.enabled:
        return features, labels
    gathered = _GatherGlobalBatch.apply(features, ctx.rank, ctx.world_size)
    label_parts = [torch.empty_like(labels) for _ in range(ctx.world_size)]
    dist.all_gather(label_parts, labels.contiguous())
    return gathered, torch.cat(label_parts)


def mean_over_ranks(ctx: DistContext, values: dict[str, float]) -> dict[str, float]:
    """Average logged statistics over ranks in one collective, so rank 0 logs the job's numbers."""
    if not ctx.enabled:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, tensor.tolist())}


# --------------------------------------------------------------------------------------------
# Sharded inference


def shard_range(num_items: int, batch_size: int, rank: int, world_size: int) -> range:
    """This rank's contiguous run of items, cut at multiples of ``batch_size``.

    Each rank processes whole batches of the single-process batching, so every batch has exactly
    the same content as in one process (kernels may depend on batch size), and concatenating the
    ranks' results in rank order restores record order: the gathered features are bit-identical.
    """
    num_batches = -(-num_items // batch_size)
    first = num_batches * rank // world_size
    last = num_batches * (rank + 1) // world_size
    return range(min(first * batch_size, num_items), min(last * batch_size, num_items))


def all_gather_rows(ctx: DistContext, local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``[n_r, ...]`` tensor in rank order (rows may differ per rank)."""
    if not ctx.enabled:
        return local
    local = local.to(ctx.device).contiguous()
    counts = [torch.zeros(1, dtype=torch.int64, device=ctx.device) for _ in range(ctx.world_size)]
    dist.all_gather(counts, torch.tensor([local.shape[0]], dtype=torch.int64, device=ctx.device))
    sizes = [int(c.item()) for c in counts]
    padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype, device=ctx.device)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]).cpu()


# --------------------------------------------------------------------------------------------
# Local launcher for -d '(0,1,...)'


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _local_worker(local_rank: int, nprocs: int, port: int, target: Callable, payload: object) -> None:
    os.environ.update({
        "RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(nprocs),
        "LOCAL_WORLD_SIZE": str(nprocs), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
    })
    try:
        code = int(target(payload) or 0)
    except BpmError as exc:
        print(f"error: rank {local_rank}: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    if code:
        sys.exit(code)


def spawn_local(target: Callable[[object], int], payload: object, nprocs: int) -> int:
    """Run ``target(payload)`` in ``nprocs`` fresh processes forming one job on this machine.

    What torchrun does for one node, for users of the original's ``-d`` syntax; ``target`` must
    be a module-level function (it is pickled into the spawned interpreters).
    """
    import torch.multiprocessing as mp

    try:
        mp.start_processes(_local_worker, args=(nprocs, free_port(), target, payload), nprocs=nprocs,
                           join=True, start_method="spawn")
    except mp.ProcessExitedException as exc:
        raise BpmError(f"worker rank {exc.error_index} exited with status {exc.exit_code}; the other workers were "
                       "stopped (its error is printed above)") from exc
    except mp.ProcessRaisedException as exc:
        last = [line for line in str(exc).strip().splitlines() if line.strip()][-1:] or ["unknown error"]
        raise BpmError(f"worker rank {exc.error_index} crashed: {last[0].strip()} (traceback above)") from exc
    return 0
