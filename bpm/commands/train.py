"""``bpm train`` / ``script/experiment/train.py``: train, then evaluate (or only evaluate).

This is the one place that wires dataset -> model -> precision policy -> trainer -> evaluation
from the original's switches; the pieces themselves know nothing of each other.
"""
from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

from bpm import distributed
from bpm.config import add_train_arguments, default_exp_dir, is_unset, save_config
from bpm.data.datasets import build_dataset
from bpm.engine.checkpoint import CKPT_NAME, load_checkpoint
from bpm.engine.diskspace import check_free_space, estimate_checkpoint_bytes, prepare_exp_dir
from bpm.engine.outputs import check_output_file
from bpm.engine.resume_check import check_resume
from bpm.engine.runfolder import RunLock, record_names, start_fresh_logs
from bpm.engine.config import TrainConfig
from bpm.engine.evaluator import EvalSettings, evaluate_model, evaluate_test_set, write_results
from bpm.engine.logging import RunLogger, StreamMirror, log_hparams
from bpm.engine.trainer import Trainer, seed_everything
from bpm.errors import BpmError
from bpm.models.imagenet import init_backbone
from bpm.models.reid import ReidModel, build_model, load_inference_model
from bpm.precision import PrecisionPolicy, resolve_device
from bpm.recipes import apply_recipe
from bpm.switches import check_train
from bpm.runconfig import add_config_argument, run_versions
from bpm.vis.plots import write_run_plots


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)
    add_config_argument(parser)


def test_normalize(args: argparse.Namespace, model: ReidModel) -> bool:
    """``--test_normalize``, by default on for BNNeck features: the neck makes them suited to cosine
    comparison (the ID loss shapes their direction), as in the strong baselines' evaluation."""
    if args.test_normalize is not None:
        return args.test_normalize
    return args.normalize_feature or model.architecture["neck"] == "bnneck"


def eval_settings(args: argparse.Namespace, normalize: bool) -> EvalSettings:
    return EvalSettings(
        resize_h_w=tuple(args.resize_h_w),
        normalize_feature=normalize,
        rerank=args.rerank,
        batch_size=args.batch_size_test,
        workers=args.workers,
        save_features=args.save_features or None,
        flip=args.test_flip,
        mq_pooling=args.mq_pooling,
    )


def settings_from_weights(args: argparse.Namespace, model: ReidModel, weights: str) -> None:
    """Network, last stride and input size as the weights file stores them, unless typed
    (:mod:`bpm.models.meta`): a model trained at 64x32 is evaluated at 64x32."""
    from bpm.models.meta import choose

    args.net, args.last_conv_stride = model.net, model.last_conv_stride
    args.resize_h_w = choose("resize_h_w", args.resize_h_w, model.input_meta, weights)


def _check_args(args: argparse.Namespace) -> None:
    if args.only_test and args.resume:
        raise BpmError("--only_test true and --resume true contradict each other; choose one")
    if args.total_epochs < 0:
        raise BpmError(f"--total_epochs: expected a non-negative number, got {args.total_epochs}")
    check_train(args)  # every switch's value, before any work (bpm.switches)
    if args.save_features:
        check_output_file(args.save_features, "--save_features", hdf5=True)


def kept_on_error(args: argparse.Namespace) -> str:
    """What an output error at any point leaves behind (the ``bpm`` front end's OSError line)."""
    if getattr(args, "only_test", False):
        return "a test run writes no checkpoint; files written before were kept"
    ckpt = Path(args.exp_dir or default_exp_dir(args)) / CKPT_NAME
    if ckpt.is_file():
        return f"the last checkpoint {ckpt} is intact (resume with --resume true)"
    return "no checkpoint had been written yet"


def run(args: argparse.Namespace) -> int:
    """One process, a torchrun worker, or (``-d '(0,1,...)'``) the launcher of one worker per GPU."""
    apply_recipe(args)
    _check_args(args)
    if distributed.wants_local_spawn(args.sys_device_ids):
        resolve_device(tuple(args.sys_device_ids))  # a missing GPU is reported once, before any worker starts
        return distributed.spawn_local(run, args, len(args.sys_device_ids))
    ctx = distributed.init(args.sys_device_ids, args.dist_timeout)
    try:
        with distributed.peer_failures_as_errors(ctx), distributed.stdout_on_main_only(ctx):
            distributed.check_same_across_ranks(ctx, distributed.args_for_check(args), "settings")
            return _run_process(args, ctx)
    finally:
        distributed.teardown(ctx)


def _run_process(args: argparse.Namespace, ctx: distributed.DistContext) -> int:
    """Everything one rank does; only rank 0 writes into the experiment folder."""
    device = ctx.device
    policy = PrecisionPolicy.create(args.opt_level, device, args.amp_dtype, args.keep_batchnorm_fp32, args.loss_scale)
    if args.set_seed:
        seed_everything(args.seed)
    # Build everything that can fail on user input before touching the experiment folder.
    if args.only_test:
        weights = args.model_weight_file or str(Path(args.exp_dir or default_exp_dir(args)) / "ckpt.pth")
        model = load_inference_model(weights, args.net, args.last_conv_stride)
        settings_from_weights(args, model, weights)
    dataset = build_dataset(
        args.dataset,
        args.data_root or None,
        cuhk03_type=args.cuhk03_type,
        trainset_part=args.trainset_part,
        skip_bad_images=args.skip_bad_images,
        seed=args.seed,
        require_train=not args.only_test,  # a test-only folder (query/ + gallery/ only) is fine for --only_test
    )
    if not args.only_test:
        # The ID head has one output per training identity, so the model comes after the data set.
        num_classes = dataset.num_train_ids if TrainConfig.from_args(args).loss.needs_classes else 0
        model = build_model(args.net, args.last_conv_stride, pooling=args.pooling, neck=args.neck,
                            num_classes=num_classes)
        if not args.resume:
            init_backbone(model, args.net_pretrained_path)
    distributed.check_same_across_ranks(
        ctx, {ts.name: distributed.records_digest(ts.query + ts.gallery) for ts in dataset.test_sets}
        | {"training set": distributed.records_digest(dataset.train)}, "datasets")
    exp_dir = Path(args.exp_dir) if args.exp_dir else default_exp_dir(args)
    ckpt, resume_changes = None, []
    if args.resume:
        # Switches that contradict the checkpoint are refused here, before the folder is touched.
        ckpt = load_checkpoint(exp_dir / CKPT_NAME)
        stored_input = ckpt.get("input") if isinstance(ckpt.get("input"), dict) else {}
        if is_unset(args.resize_h_w) and isinstance(stored_input.get("resize_h_w"), (list, tuple)):
            args.resize_h_w = tuple(int(v) for v in stored_input["resize_h_w"])  # resume at the size it trained at
        facts = {"net": model.net, "architecture": getattr(model, "architecture", None),
                 "num_classes": len({r.pid for r in dataset.train})}
        resume_changes = check_resume(ckpt, TrainConfig.from_args(args), facts, exp_dir / CKPT_NAME)
    lock = None
    if ctx.is_main:
        prepare_exp_dir(exp_dir)  # an unwritable folder fails here, in one line, before any work
        lock = RunLock(exp_dir, "bpm test" if args.only_test else "bpm train").acquire()  # one run per folder
    try:
        return _run_locked(args, ctx, policy, dataset, model, exp_dir, ckpt, resume_changes)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(args, ctx, policy, dataset, model, exp_dir: Path, ckpt: dict | None, resume_changes: list[str]) -> int:
    """The part of a run that writes into ``exp_dir`` (rank 0 holds its lock)."""
    device = ctx.device
    config_name, results_name = record_names(exp_dir, training=not args.only_test)
    if ctx.is_main and not args.only_test and not args.resume:
        for kept in start_fresh_logs(exp_dir):  # a fresh run never appends to a previous run's log
            print(f"Starting afresh (no --resume true): the previous run's {kept.name.split('.')[0]} was kept as {kept}")
    with StreamMirror(exp_dir, enabled=args.log_to_file and ctx.is_main):
        if ctx.is_main:
            records = {"versions": run_versions(device)}
            if resume_changes:
                records["resume_changes"] = resume_changes
            save_config(args, exp_dir / config_name, records)
        print(f"Experiment folder: {exp_dir}")
        print(f"Dataset {dataset.name}: {len(dataset.train)} training images of {dataset.num_train_ids} identities; "
              f"test sets: {', '.join(ts.name for ts in dataset.test_sets)}")
        print(f"Network {args.net}, input {args.resize_h_w[0]}x{args.resize_h_w[1]}, "
              f"precision {policy.describe()}, device {device}")
        settings = eval_settings(args, test_normalize(args, model))
        settings.shard = ctx.enabled
        weights = (args.model_weight_file if args.only_test else "") or str(exp_dir / CKPT_NAME)
        settings.features_attrs = {"weights": str(Path(weights).resolve()), "net": args.net, "exp_dir": str(exp_dir.resolve()),
                                   "dataset": dataset.name, "opt_level": args.opt_level,
                                   "command": "bpm test" if args.only_test else "bpm train"}
        extra: dict = {"versions": run_versions(device)}
        if args.only_test:
            model = policy.prepare_model(model)
        else:
            if args.eval_untrained:
                print("Untrained network:")
                untrained = evaluate_model(policy.prepare_model(copy.deepcopy(model)), dataset.test_sets, policy,
                                           EvalSettings(**{**vars(settings), "rerank": False, "save_features": None}))
                first = next(iter(untrained.values()))["single_query"]
                extra["untrained"] = {"mAP": float(first["mAP"]), "cmc": {"1": float(first["cmc"][0])}}
            model = _train(args, model, policy, dataset, exp_dir, ctx, ckpt)
            print("Trained network:")
        reports = evaluate_model(model, dataset.test_sets, policy, settings)
        if ctx.is_main:
            write_results(exp_dir / results_name, dataset.name, args.net, args.opt_level, reports, extra)
            print(f"Results written to {exp_dir / results_name}")
            # cmc_curve.png (test_cmc_curve.png in a training folder), training_curves.png after training; only warns
            write_run_plots(exp_dir, reports, cmc_name=results_name.replace("results.json", "cmc_curve.png"),
                            training=not args.only_test)
            if not args.only_test and args.log_to_file:
                first = next(iter(reports.values()))["single_query"]
                log_hparams(exp_dir, vars(args), {"hparam/mAP": float(first["mAP"]), "hparam/mINP": float(first["mINP"]),
                                                  "hparam/rank1": float(first["cmc"][0])}, args.total_epochs)
    return 0


def _train(args, model, policy, dataset, exp_dir: Path, ctx: distributed.DistContext, ckpt: dict | None = None):
    validator = None
    if dataset.val is not None:
        val_settings = EvalSettings(resize_h_w=tuple(args.resize_h_w), normalize_feature=test_normalize(args, model),
                                    batch_size=args.batch_size_test, workers=args.workers, shard=ctx.enabled)

        def validator(m):
            result = evaluate_test_set(m, dataset.val, policy, val_settings, verbose=False)["single_query"]
            return float(result["mAP"]), float(result["cmc"][0])

    trainer = Trainer(model, policy, TrainConfig.from_args(args), dataset.train, exp_dir, validator, ctx.rank,
                      ctx.world_size)
    if args.resume:
        trainer.resume(ckpt=ckpt)
    elif ctx.is_main and trainer.ckpt_path.exists():
        # A fresh run must not silently replace a previous run's checkpoint at its first save.
        kept = trainer.ckpt_path.with_name(f"{trainer.ckpt_path.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
        os.replace(trainer.ckpt_path, kept)
        print(f"Starting afresh (no --resume true): the previous checkpoint was kept as {kept}")
    if ctx.is_main:
        check_free_space(exp_dir, estimate_checkpoint_bytes(trainer.checkpoint_state(), trainer.optimizer),
                         trainer.ckpt_path)
    logger = RunLogger(exp_dir, tensorboard=args.log_to_file) if ctx.is_main else None
    try:
        trainer.fit(logger)
    finally:
        if logger is not None:
            logger.close()
    return trainer.bare_model
