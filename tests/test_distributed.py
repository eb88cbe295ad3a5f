"""bpm.distributed and the DDP paths of the trainer/evaluator, on CPU with the gloo backend.

Multi-process tests start real ranks (``multiprocessing`` spawn, one process group over
localhost) and let each rank write what it saw to ``tmp_path``; the parent compares those
results with a single-process run of the same code. Models are tiny so a step costs
milliseconds; the cost of these tests is process start-up (importing torch).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bpm.cli.switches import train_config
from bpm.models.reid import ReidOutput
from bpm import distributed
from bpm.data.datasets import build_dataset
from bpm.models.input_spec import InputSpec
from bpm.engine.evaluator import EvalSettings, evaluate_test_set
from bpm.engine.logging import RunLogger
from bpm.engine.build import build_training, wrap_for_ranks
from bpm.engine.trainer import Trainer, seed_everything
from bpm.errors import BpmError
from bpm.evaluation.features import extract_features
from bpm.precision import PrecisionPolicy
from bpm.models.input_spec import input_spec_of_model

from train_helpers import train_args

POLICY = PrecisionPolicy.create("O0", "cpu")


class TinyNet(nn.Module):
    """A small embedding net. GroupNorm (per image), not BatchNorm, while training: with BatchNorm
    the batch statistics of a half batch differ from those of the whole batch, and world 2 x P/2
    could not match world 1 x P without SyncBatchNorm, which PyTorch only runs on CUDA."""

    feature_dim = 16

    def __init__(self, batchnorm: bool = False, num_classes: int = 0) -> None:
        super().__init__()
        norm = nn.BatchNorm2d(8) if batchnorm else nn.GroupNorm(2, 8)
        self.base = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), norm, nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(16, num_classes, bias=False) if num_classes else None  # an ID head, as bot's

    def forward(self, x: torch.Tensor) -> torch.Tensor | ReidOutput:
        features = self.base(x)
        if self.training and self.head is not None:
            return ReidOutput(features, features, self.head(features))
        return features


# ------------------------------------------------------------------------------ rank harness


def _rank_main(rank: int, world_size: int, port: int, job: str, out: str, payload: dict) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    result: dict = {}
    try:
        ctx = distributed.init((), payload.get("timeout", 60.0))
        with distributed.peer_failures_as_errors(ctx):
            result = JOBS[job](ctx, payload)
        distributed.teardown(ctx)
    except BpmError as exc:
        result = {"error": str(exc)}
    except Exception:  # noqa: BLE001 - the parent reports it
        result = {"crash": traceback.format_exc()}
    result["done_at"] = time.time()
    torch.save(result, Path(out) / f"rank{rank}.pt")
    os._exit(0)  # skip interpreter teardown (fast, and no hang on a broken process group)


def run_ranks(tmp_path: Path, job: str, payload: dict, world_size: int = 2, limit_s: float = 240) -> list[dict]:
    """Run ``JOBS[job]`` on ``world_size`` ranks; the result dict of each (None if it wrote none)."""
    out = tmp_path / f"ranks_{job}"
    out.mkdir()
    spawn = multiprocessing.get_context("spawn")
    port = distributed.free_port()
    procs = [spawn.Process(target=_rank_main, args=(r, world_size, port, job, str(out), payload))
             for r in range(world_size)]
    for proc in procs:
        proc.start()
    deadline = time.time() + limit_s
    for proc in procs:
        proc.join(max(1.0, deadline - time.time()))
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    results = []
    for r in range(world_size):
        path = out / f"rank{r}.pt"
        results.append(torch.load(path, weights_only=False) if path.exists() else None)
    for result in results:
        assert not (result or {}).get("crash"), result["crash"]
    return results


# ------------------------------------------------------------------------------ jobs


def _train_args(payload: dict, exp_dir: Path, extra: tuple[str, ...] = ()):
    return train_args(Path(payload["world"]), exp_dir, "--optimizer", "sgd", "--base_lr", "0.05",
                      "--ids_per_batch", "4", "--ims_per_id", "2", "--total_epochs", str(payload["epochs"]),
                      *payload.get("extra", ()), *extra)


def fit_losses(rank: int, world_size: int, payload: dict, exp_dir: Path, resume: bool = False) -> list[float]:
    """Train TinyNet as the trainer does for the CLI; rank 0's logged per-step losses."""
    args = _train_args(payload, exp_dir)
    seed_everything(args.seed)
    records = build_dataset("market1501", payload["world"]).train
    model = TinyNet(num_classes=len({r.pid for r in records}) if args.id_loss_weight else 0)
    ctx = distributed.DistContext(rank, world_size, device=POLICY.device)
    trainer = Trainer(build_training(train_config(args), POLICY, model, records, ctx,
                                     input_spec=input_spec_of_model(model, args.resize_h_w)), exp_dir)
    if resume:
        trainer.resume(Path(payload["resume_from"]))
    if rank != 0:
        trainer.fit(None)
        return []
    exp_dir.mkdir(parents=True, exist_ok=True)
    log = exp_dir / "train_log.jsonl"
    log.unlink(missing_ok=True)
    logger = RunLogger(exp_dir, tensorboard=False)
    trainer.fit(logger)
    logger.close()
    return [json.loads(line)["loss"] for line in log.read_text().splitlines()]


def job_train(ctx: distributed.DistContext, payload: dict) -> dict:
    return {"losses": fit_losses(ctx.rank, ctx.world_size, payload, Path(payload["exp_dir"]))}


def job_features(ctx: distributed.DistContext, payload: dict) -> dict:
    torch.manual_seed(0)
    model = TinyNet(batchnorm=True).eval()
    test_set = build_dataset("market1501", payload["world"]).test_sets[0]
    settings = EvalSettings(InputSpec.for_size((64, 32)), batch_size=5, workers=0, rerank=True)
    features = extract_features(model, test_set.gallery, POLICY, (64, 32), 5, 0, ctx=ctx)
    return {"features": features, "report": evaluate_test_set(model, test_set, POLICY, settings, verbose=False, ctx=ctx)}


def job_check_args(ctx: distributed.DistContext, payload: dict) -> dict:
    args = train_args(Path(payload["world"]), Path("unused"), "--base_lr", "0.1" if ctx.rank else "0.2",
                      "--workers", str(ctx.rank))
    distributed.check_same_across_ranks(ctx, distributed.switches_for_check(vars(args)), "settings")
    return {}


def job_peer_dies(ctx: distributed.DistContext, payload: dict) -> dict:
    """Rank 1 dies (SIGKILL) or hangs at its third step; rank 0 must stop with a clear error."""
    original = Trainer.train_step

    def train_step(self, images, labels, indices=None):
        if ctx.rank == 1 and self.position.global_step == 2:
            if payload["how"] == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            while not (Path(payload["out"]) / "rank0.pt").exists():  # hang until the survivor gave up
                time.sleep(0.2)
            os._exit(0)
        return original(self, images, labels, indices)

    Trainer.train_step = train_step
    torch.save(time.time(), Path(payload["exp_dir"]) / f"start{ctx.rank}.pt")
    fit_losses(ctx.rank, ctx.world_size, payload, Path(payload["exp_dir"]))
    return {}


JOBS = {"train": job_train, "features": job_features, "check_args": job_check_args, "peer_dies": job_peer_dies}


# ------------------------------------------------------------------------------ single-process units


@pytest.mark.parametrize("num_items,batch_size,world_size", [(23, 5, 2), (10, 5, 2), (3, 5, 2), (0, 4, 3), (64, 8, 3)])
def test_shard_range_covers_items_in_order_with_whole_batches(num_items, batch_size, world_size):
    shards = [distributed.shard_range(num_items, batch_size, r, world_size) for r in range(world_size)]
    assert [i for shard in shards for i in shard] == list(range(num_items))
    for shard in shards:
        assert shard.start % batch_size == 0
        assert shard.stop == num_items or shard.stop % batch_size == 0


def test_single_process_context_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = distributed.init((), 10.0)
    assert (ctx.world_size, ctx.is_main, ctx.enabled, ctx.device.type) == (1, True, False, "cpu")
    features, labels = torch.randn(4, 3), torch.arange(4)
    assert distributed.gather_for_mining(ctx, features, labels) == (features, labels)
    assert distributed.mean_over_ranks(ctx, {"loss": 2.0}) == {"loss": 2.0}
    assert distributed.broadcast_object(ctx, 17) == 17
    distributed.check_same_across_ranks(ctx, {"a": 1}, "settings")
    assert distributed.all_gather_rows(ctx, features) is features


def test_launch_detection_and_device_choice(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launched_distributed() and not distributed.wants_local_spawn((0, 1))
    monkeypatch.delenv("WORLD_SIZE")
    assert distributed.wants_local_spawn((0, 1)) and not distributed.wants_local_spawn((0,))
    assert distributed.device_for_rank((), 1).type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(BpmError, match="CUDA is not available"):
            distributed.device_for_rank((0, 1), 1)


def test_bad_timeout_and_environment_are_user_errors(monkeypatch):
    with pytest.raises(BpmError, match="--dist_timeout"):
        distributed.init((), 0)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(BpmError, match="WORLD_SIZE"):
        distributed.init((), 10.0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(BpmError, match="MASTER_ADDR"):
        distributed.init((), 10.0)


def test_sync_bn_on_cpu_is_refused_with_a_clear_message():
    ctx = distributed.DistContext(rank=0, world_size=2)
    with pytest.raises(BpmError, match="--sync_bn"):
        wrap_for_ranks(TinyNet(batchnorm=True), POLICY, ctx, sync_bn=True)


def test_records_digest_ignores_the_data_root(tiny_world, tmp_path):
    records = build_dataset("market1501", tiny_world).train
    moved = [type(r)(str(tmp_path / Path(r.path).name), r.pid, r.camid) for r in records]
    assert distributed.records_digest(records) == distributed.records_digest(moved)
    assert distributed.records_digest(records) != distributed.records_digest(records[:-1])


def test_distributed_switches_exist(tiny_world, tmp_path):
    args = train_args(tiny_world, tmp_path, "--sync_bn", "true", "--gather_for_mining", "yes", "--dist_timeout", "30")
    assert (args.sync_bn, args.gather_for_mining, args.dist_timeout) == (True, True, 30.0)


# ------------------------------------------------------------------------------ two ranks


def test_mismatched_arguments_are_detected_at_start(tiny_world, tmp_path):
    results = run_ranks(tmp_path, "check_args", {"world": str(tiny_world)})
    for result in results:
        assert "settings differ between ranks" in result["error"]
        assert "base_lr" in result["error"] and "workers" not in result["error"]


@pytest.mark.slow
def test_sharded_evaluation_equals_single_process_exactly(tiny_world, tmp_path):
    results = run_ranks(tmp_path, "features", {"world": str(tiny_world)})
    torch.set_num_threads(1)
    single = job_features(distributed.DistContext(), {"world": str(tiny_world)})
    for result in results:
        assert np.array_equal(result["features"], single["features"])
        assert result["report"].keys() == single["report"].keys() and "reranked_multi_query" in single["report"]
        for key, value in single["report"].items():
            assert result["report"][key]["mAP"] == value["mAP"]
            assert np.array_equal(result["report"][key]["cmc"], value["cmc"])


@pytest.mark.slow
@pytest.mark.parametrize("id_loss", ["0", "1"])
def test_two_ranks_match_one_process_and_their_checkpoint_resumes_in_one(tiny_world, tmp_path, id_loss):
    """World 2 x (P/2) with --gather_for_mining follows world 1 x P step by step (SGD, so a wrong
    gradient scale would show; Adam would hide it), and its checkpoint continues in one process
    exactly as the one-process run continued. With the ID loss too: its classes are the global
    training identities, so every rank's head agrees and DDP's gradient average is the global one."""
    payload = {"world": str(tiny_world), "extra": ("--gather_for_mining", "true", "--id_loss_weight", id_loss)}
    single = fit_losses(0, 1, {**payload, "epochs": 2}, tmp_path / "single")
    two = run_ranks(tmp_path, "train", {**payload, "epochs": 1, "exp_dir": str(tmp_path / "two")})
    steps = len(two[0]["losses"])
    assert steps == len(single) // 2 >= 3 and two[1]["losses"] == []
    np.testing.assert_allclose(two[0]["losses"], single[:steps], rtol=1e-4)
    assert len(set(np.round(single, 3))) > 1  # the weights really moved
    ckpt = tmp_path / "two" / "ckpt.pth"
    resumed = fit_losses(0, 1, {**payload, "epochs": 2, "resume_from": str(ckpt)}, tmp_path / "resumed", resume=True)
    np.testing.assert_allclose(resumed, single[steps:], rtol=1e-4)
    assert not any(k.startswith("module.") for k in torch.load(ckpt, weights_only=True)["state_dicts"][0])


@pytest.mark.slow
def test_per_rank_mining_logs_the_mean_over_ranks(tiny_world, tmp_path):
    """Without --gather_for_mining each rank mines its own half batch: a different objective
    than one process over the whole batch, but training runs and rank 0 logs the job's mean."""
    payload = {"world": str(tiny_world), "epochs": 1, "exp_dir": str(tmp_path / "two")}
    two = run_ranks(tmp_path, "train", payload)
    assert len(two[0]["losses"]) >= 3 and all(np.isfinite(two[0]["losses"]))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "hang"])
def test_a_dead_rank_stops_the_others_with_a_clear_message(tiny_world, tmp_path, how):
    timeout = 5.0
    exp_dir = tmp_path / "dies"
    exp_dir.mkdir()
    payload = {"world": str(tiny_world), "epochs": 1, "exp_dir": str(exp_dir), "how": how, "timeout": timeout,
               "out": str(tmp_path / "ranks_peer_dies")}
    survivor = run_ranks(tmp_path, "peer_dies", payload, limit_s=120)[0]
    assert "lost contact with the other ranks" in survivor["error"]
    started = torch.load(exp_dir / "start0.pt")
    # Killed: the socket closes and the survivor stops at once; hung: after --dist_timeout.
    assert survivor["done_at"] - started < timeout * 3


def _spawned(payload: dict) -> int:
    ctx = distributed.init((), 30.0)
    (Path(payload["out"]) / f"rank{ctx.rank}").write_text(f"{ctx.world_size} {os.environ['LOCAL_RANK']}")
    if payload["fail"] and ctx.rank == 1:
        raise BpmError("boom")
    distributed.teardown(ctx)
    return 0


@pytest.mark.slow
def test_local_launcher_runs_one_worker_per_id_and_reports_a_failing_one(tmp_path, monkeypatch):
    """The launcher behind -d '(0,1)' (here with CPU ranks: the GPU mapping is resolve_device's)."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.spawn_local(_spawned, {"out": str(tmp_path), "fail": False}, 2) == 0
    assert sorted(p.read_text() for p in tmp_path.glob("rank*")) == ["2 0", "2 1"]
    with pytest.raises(BpmError, match="worker rank 1 exited with status 2"):
        distributed.spawn_local(_spawned, {"out": str(tmp_path), "fail": True}, 2)


@pytest.mark.slow
@pytest.mark.parametrize("net", ["mobilenet_v2", "efficientnet_lite0"])
def test_torchrun_cli_two_ranks_then_resume_in_one_process(tiny_world, tmp_path, net):
    """The user's commands: torchrun with 2 CPU ranks, then --resume in a single process, for each edge
    backbone (Lite0's BatchNorm eps and TF padding must survive DDP's wrapping and the resume)."""
    import subprocess
    import sys

    exp = tmp_path / "exp"
    common = ["train", "-d", "()", "--dataset", "market1501", "--data_root", str(tiny_world), "--exp_dir", str(exp),
              "--resize_h_w", "(64, 32)", "--ids_per_batch", "4", "--ims_per_id", "2", "--workers", "0",
              "--set_seed", "true", "--rerank", "false", "--steps_per_log", "1", "--gather_for_mining", "true",
              "--net", net, "--net_pretrained_path", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(distributed.free_port()), "-m", "bpm", *common, "--total_epochs", "1"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert len(list(exp.glob("stdout_*.txt"))) == 1 and (exp / "results.json").exists()
    assert two.stdout.count("Experiment folder") == 1  # rank 1 prints nothing
    one = subprocess.run([sys.executable, "-m", "bpm", *common, "--total_epochs", "2", "--resume", "true"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "Resumed from" in one.stdout and "Ep 2, step 1/" in one.stdout
    config = json.loads((exp / "config.json").read_text())
    assert config["resume"] is True and config["net"] == net
