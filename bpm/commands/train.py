"""``bpm train`` / ``script/experiment/train.py``: train, then evaluate (or only evaluate).

This is the one place that wires dataset -> model -> precision policy -> trainer -> evaluation
from the original's switches; the pieces themselves know nothing of each other.
"""
from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from bpm import distributed
from bpm.cli.switches import (add_train_arguments, apply_recipe, as_switches, data_settings, data_switches,
                        default_exp_dir, device_settings, device_switches, evaluation_settings, feature_settings,
                        feature_switches, model_settings, output_settings, output_switches,
                        precision_settings, precision_switches, save_config, start_settings, train_config,
                        train_switches)
from bpm.engine.checkpoint import CKPT_NAME, load_checkpoint, rng_state, set_rng_state
from bpm.engine.diskspace import check_free_space, estimate_checkpoint_bytes, prepare_exp_dir
from bpm.files import check_output_file
from bpm.engine.resume_check import check_resume
from bpm.engine.build import build_training
from bpm.engine.runfolder import RunLock, move_previous_run, record_names
from bpm.engine.train_config import TrainConfig
from bpm.engine.evaluator import EvalSettings, evaluate_model, evaluate_test_set, write_results
from bpm.engine.logging import RunLogger, StreamMirror, log_hparams
from bpm.engine.trainer import Trainer, seed_everything
from bpm.errors import BpmError
from bpm.models.imagenet import init_backbone
from bpm.models.input_spec import InputSpec, input_spec_of_model
from bpm.models.loading import load_model
from bpm.models.reid import ReidModel, build_model
from bpm.precision import PrecisionPolicy, resolve_device
from bpm.cli.checks import check_train
from bpm.cli.run_config import add_config_argument, run_versions
from bpm.vis.plots import write_run_plots
from bpm.settings import (DataSettings, DeviceSettings, EvaluationSettings, FeatureSettings, ModelSettings,
                          OutputSettings, PrecisionSettings, StartSettings, is_unset)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser)
    add_config_argument(parser)


@dataclass(frozen=True)
class RunSettings:
    """Everything one ``bpm train``/``bpm test`` run needs, in groups, each switch in one of them; made
    once from the switches by :func:`run_settings`, what travels to every worker process of a multi-GPU
    run, and what ``config.json`` is written from (:meth:`switches`)."""

    device: DeviceSettings
    data: DataSettings
    model: ModelSettings
    precision: PrecisionSettings
    features: FeatureSettings
    eval: EvaluationSettings
    output: OutputSettings
    train: TrainConfig | None = None  # None: evaluate only (--only_test true, bpm test)
    start: StartSettings | None = None  # how training starts; None when evaluating only
    config_file: str | None = None  # the --config file the switches came from (recorded in config.json)
    input_spec: InputSpec | None = None  # bpm test: the loaded file's (bpm.load_model); training: the model's

    @property
    def only_test(self) -> bool:
        return self.train is None

    @property
    def folder(self) -> Path:
        """The run folder: ``--exp_dir``, else the original's name made of the settings."""
        if self.output.exp_dir is not None:
            return self.output.exp_dir
        return default_exp_dir(self.data.dataset, self.model.net, self.precision.opt_level,
                               self.model.last_conv_stride, self.output.run)

    @property
    def command(self) -> str:
        return "bpm test" if self.only_test else "bpm train"

    def switches(self) -> dict[str, Any]:
        """The settings as the command's switches (what ``config.json`` records and ``--config`` reads):
        :func:`run_settings`' inverse. A switch read into two groups (``--workers``,
        ``--normalize_feature``) must agree in both."""
        training = self.train is not None
        parts = [device_switches(self.device), data_switches(self.data, training), as_switches(self.model),
                 precision_switches(self.precision, training), feature_switches(self.features),
                 as_switches(self.eval), output_switches(self.output)]
        if training:
            parts += [as_switches(self.start), train_switches(self.train)]
        out: dict[str, Any] = {"only_test": not training, "config": self.config_file}
        for part in parts:
            for name, value in part.items():
                if name in out and out[name] != value:
                    raise ValueError(f"the settings disagree on --{name}: {out[name]!r} and {value!r}")
                out[name] = value
        return out


def run_settings(args: argparse.Namespace) -> RunSettings:
    """The command boundary: parsed (recipe-filled, checked) switches -> :class:`RunSettings`."""
    training = not getattr(args, "only_test", False)
    return RunSettings(
        device=device_settings(args), data=data_settings(args, training),
        model=model_settings(args), precision=precision_settings(args, training),
        features=feature_settings(args), eval=evaluation_settings(args),
        output=output_settings(args), train=train_config(args) if training else None,
        start=start_settings(args) if training else None,
        config_file=getattr(args, "config", None),  # a record, not a setting: parsers made without --config lack it
    )


def test_normalize(settings: RunSettings, spec: InputSpec) -> bool:
    """``--test_normalize``, by default the model's own test-time normalisation (its InputSpec: on for
    BNNeck features, which the neck makes suited to cosine comparison, as in the strong baselines'
    evaluation), or ``--normalize_feature``."""
    if settings.eval.test_normalize is not None:
        return settings.eval.test_normalize
    return bool(settings.features.normalize) or spec.normalize_features


def eval_settings(settings: RunSettings, normalize: bool, spec: InputSpec) -> EvalSettings:
    return EvalSettings(
        input_spec=spec,
        normalize_feature=normalize,
        rerank=settings.eval.rerank,
        batch_size=settings.features.batch_size,
        workers=settings.features.workers,
        save_features=settings.eval.save_features or None,
        flip=settings.features.flip,
        mq_pooling=settings.eval.mq_pooling,
    )


def settings_from_spec(settings: RunSettings, spec: InputSpec) -> RunSettings:
    """Network, last stride and input size as :func:`bpm.load_model` resolved them (typed, else the
    weights file's, else the backbone's): a model trained at 64x32 is evaluated at 64x32."""
    chosen = ModelSettings(net=spec.net, last_conv_stride=spec.last_conv_stride, resize_h_w=spec.resize_h_w)
    return replace(settings, model=chosen, input_spec=spec)


def spec_of_run(settings: RunSettings, model: ReidModel) -> InputSpec:
    """The input spec a run evaluates with: the loaded file's (``bpm test``), else the trained model's."""
    return settings.input_spec or input_spec_of_model(model, settings.model.resize_h_w)


def _check_args(args: argparse.Namespace) -> None:
    if getattr(args, "only_test", False) and getattr(args, "resume", False):
        raise BpmError("--only_test true and --resume true contradict each other; choose one")
    if getattr(args, "total_epochs", 0) < 0:
        raise BpmError(f"--total_epochs: expected a non-negative number, got {args.total_epochs}")
    check_train(vars(args))  # every switch's value, before any work (bpm.cli.checks)
    if args.save_features:
        check_output_file(args.save_features, "--save_features", hdf5=True)


def kept_on_error(args: argparse.Namespace) -> str:
    """What an output error at any point leaves behind (the ``bpm`` front end's OSError line)."""
    if getattr(args, "only_test", False):
        return "a test run writes no checkpoint; files written before were kept"
    ckpt = Path(args.exp_dir or default_exp_dir(args.dataset, args.net, args.opt_level, args.last_conv_stride,
                                                args.run)) / CKPT_NAME
    if ckpt.is_file():
        return f"the last checkpoint {ckpt} is intact (resume with --resume true)"
    return "no checkpoint had been written yet"


def run(args: argparse.Namespace) -> int:
    """``bpm train`` / ``bpm test``: fill the recipe, check the switches, then :func:`run_with`."""
    if not getattr(args, "only_test", False):
        apply_recipe(args)
    _check_args(args)
    return run_with(run_settings(args))


def run_with(settings: RunSettings) -> int:
    """One process, a torchrun worker, or (``-d '(0,1,...)'``) the launcher of one worker per GPU."""
    devices = settings.device.devices
    if distributed.wants_local_spawn(devices):
        resolve_device(devices)  # a missing GPU is reported once, before any worker starts
        return distributed.spawn_local(run_with, settings, len(devices))
    ctx = distributed.init(devices, settings.device.dist_timeout)
    try:
        with distributed.peer_failures_as_errors(ctx), distributed.stdout_on_main_only(ctx):
            distributed.check_same_across_ranks(ctx, distributed.switches_for_check(settings.switches()), "settings")
            return _run_process(settings, ctx)
    finally:
        distributed.teardown(ctx)


def _run_process(settings: RunSettings, ctx: distributed.DistContext) -> int:
    """Everything one rank does; only rank 0 writes into the experiment folder."""
    device = ctx.device
    policy = settings.precision.policy(device)
    if settings.train is not None and settings.train.seed is not None:
        seed_everything(settings.train.seed)
    # Build everything that can fail on user input before touching the experiment folder.
    if settings.only_test:
        weights = settings.eval.model_weight_file or str(settings.folder / CKPT_NAME)
        model, spec = load_model(weights, **settings.model.overrides())
        settings = settings_from_spec(settings, spec)
    # A test-only folder (query/ + gallery/ only) is fine for evaluating.
    dataset = settings.data.build(require_train=not settings.only_test)
    distill = None
    if not settings.only_test and settings.train.teacher:
        from bpm.engine.distillation import open_distillation

        distill = open_distillation(settings.train, device)  # a bad teacher is one line, before any file
    if not settings.only_test:
        # The ID head has one output per training identity, so the model comes after the data set.
        num_classes = dataset.num_train_ids if settings.train.loss.needs_classes else 0
        model = build_model(settings.model.net, settings.model.last_conv_stride, num_classes=num_classes,
                            **settings.start.architecture)
        if not settings.start.resume:
            init_backbone(model, settings.start.net_pretrained_path)
    distributed.check_same_across_ranks(
        ctx, {ts.name: distributed.records_digest(ts.query + ts.gallery) for ts in dataset.test_sets}
        | {"training set": distributed.records_digest(dataset.train)}, "datasets")
    exp_dir = settings.folder
    ckpt, resume_changes = None, []
    resume = settings.start is not None and settings.start.resume
    if resume:
        # Switches that contradict the checkpoint are refused here, before the folder is touched.
        ckpt = load_checkpoint(exp_dir / CKPT_NAME)
        stored_input = ckpt.get("input") if isinstance(ckpt.get("input"), dict) else {}
        if is_unset(settings.model.resize_h_w) and isinstance(stored_input.get("resize_h_w"), (list, tuple)):
            size = tuple(int(v) for v in stored_input["resize_h_w"])  # resume at the size it trained at
            settings = replace(settings, model=replace(settings.model, resize_h_w=size))
        facts = {"net": model.net, "architecture": getattr(model, "architecture", None),
                 "num_classes": len({r.pid for r in dataset.train}), "resize_h_w": settings.model.resize_h_w}
        resume_changes = check_resume(ckpt, settings.train, facts, exp_dir / CKPT_NAME)
    trainer, untrained = None, None
    if not settings.only_test:
        # Every start-up check (sampler sizes, the optimizer state of a resume, ...) runs here, before
        # anything in the folder is written or moved: a refused start leaves the previous run as it was.
        untrained = copy.deepcopy(model) if settings.start.eval_untrained else None
        trainer = _make_trainer(settings, model, policy, dataset, ctx, distill)
        if resume:
            trainer.resume(ckpt=ckpt)
    lock = None
    if ctx.is_main:
        prepare_exp_dir(exp_dir)  # an unwritable folder fails here, in one line, before any work
        lock = RunLock(exp_dir, settings.command).acquire()  # one run per folder
    try:
        if trainer is not None and ctx.is_main:
            check_free_space(exp_dir, estimate_checkpoint_bytes(trainer.checkpoint_state(), trainer.optimizer),
                             trainer.ckpt_path)
            if not resume:
                previous = move_previous_run(exp_dir)  # a fresh run never mixes its records with an earlier one's
                if previous is not None:
                    print(f"Starting afresh (no --resume true): the previous run's records were moved to {previous}")
        return _run_locked(settings, ctx, policy, dataset, model, trainer, untrained, resume_changes)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(settings: RunSettings, ctx: distributed.DistContext, policy: PrecisionPolicy, dataset, model,
                trainer: Trainer | None, untrained: ReidModel | None, resume_changes: list[str]) -> int:
    """The part of a run that writes into the run folder (rank 0 holds its lock)."""
    device, exp_dir = ctx.device, settings.folder
    config_name, results_name = record_names(exp_dir, training=not settings.only_test)
    with StreamMirror(exp_dir, enabled=settings.output.log_to_file and ctx.is_main):
        if ctx.is_main:
            records = {"versions": run_versions(device)}
            switches = settings.switches()
            if resume_changes:
                switches, records["resume_changes"] = resume_records(settings, trainer, exp_dir / config_name,
                                                                     resume_changes)
            save_config(switches, exp_dir / config_name, records)
        net, size, opt_level = settings.model.net, settings.model.resize_h_w, settings.precision.opt_level
        print(f"Experiment folder: {exp_dir}")
        print(f"Dataset {dataset.name}: {len(dataset.train)} training images of {dataset.num_train_ids} identities; "
              f"test sets: {', '.join(ts.name for ts in dataset.test_sets)}")
        print(f"Network {net}, input {size[0]}x{size[1]}, precision {policy.describe()}, device {device}")
        spec = spec_of_run(settings, model)
        weights = (settings.eval.model_weight_file if settings.only_test else "") or str(exp_dir / CKPT_NAME)
        evaluation = replace(eval_settings(settings, test_normalize(settings, spec), spec), features_attrs={"weights": str(Path(weights).resolve()), "net": net,
                                     "exp_dir": str(exp_dir.resolve()), "dataset": dataset.name,
                                     "opt_level": opt_level, "command": settings.command,
                                     "test_normalize": int(spec.normalize_features)})
        extra: dict = {"versions": run_versions(device)}
        if trainer is None:
            model = policy.prepare_model(model)
        else:
            if untrained is not None:
                print("Untrained network:")
                state = rng_state()  # evaluating draws no number the training run would have drawn
                result = evaluate_model(policy.prepare_model(untrained), dataset.test_sets, policy,
                                        replace(evaluation, rerank=False, save_features=None), ctx)
                set_rng_state(state)
                first = next(iter(result.values()))["single_query"]
                extra["untrained"] = {"mAP": float(first["mAP"]), "cmc": {"1": float(first["cmc"][0])}}
            model = _train(settings, trainer, ctx)
            print("Trained network:")
        reports = evaluate_model(model, dataset.test_sets, policy, evaluation, ctx)
        if ctx.is_main:
            write_results(exp_dir / results_name, dataset.name, net, opt_level, reports, extra)
            print(f"Results written to {exp_dir / results_name}")
            # cmc_curve.png (test_cmc_curve.png in a training folder), training_curves.png after training; only warns
            write_run_plots(exp_dir, reports, cmc_name=results_name.replace("results.json", "cmc_curve.png"),
                            training=not settings.only_test)
            if not settings.only_test and settings.output.log_to_file:
                first = next(iter(reports.values()))["single_query"]
                log_hparams(exp_dir, settings.switches(), {"hparam/mAP": float(first["mAP"]),
                                                         "hparam/mINP": float(first["mINP"]),
                                                         "hparam/rank1": float(first["cmc"][0])},
                            settings.train.total_epochs)
    return 0


def resume_records(settings: RunSettings, trainer: Trainer, config: Path, changes: list[str]) -> tuple[dict, list[str]]:
    """The switches ``config.json`` records after a resume with changed switches, and its change list.

    Each change is listed with the step it applies from, after the earlier resumes' entries. When no
    step will run (the run had already finished), the switches keep the values the weights were
    trained with and the change is listed as not applied.
    """
    try:
        previous = json.loads(config.read_text())
    except (OSError, ValueError):
        previous = {}
    previous = previous if isinstance(previous, dict) else {}
    earlier = [c for c in previous.get("resume_changes", []) if isinstance(c, str)]
    position = trainer.position
    switches = settings.switches()
    if position.epoch < settings.train.total_epochs:
        return switches, earlier + [f"{c} (from step {position.global_step + 1})" for c in changes]
    for change in changes:
        key = change.split(" ", 1)[0]
        if key in previous and key in switches:
            switches[key] = previous[key]
    return switches, earlier + [f"{c} (not applied: the run had finished at epoch {position.epoch}, no step ran)"
                                for c in changes]


def _make_trainer(settings: RunSettings, model: ReidModel, policy: PrecisionPolicy, dataset,
                  ctx: distributed.DistContext, distill: tuple | None = None) -> Trainer:
    """The trainer (model, optimizer, sampler, loader, validator); building it runs the checks that
    depend on the data (e.g. ``--ids_per_batch`` against the training identities) and writes none of
    the run's records. ``distill``: the teacher and unlabelled records of
    :func:`bpm.engine.distillation.open_distillation`; their targets come first (the teacher cache, keyed and
    written atomically, is the one file this may write: it is shared by runs, not one run's record)."""
    validator: Callable[[ReidModel], tuple[float, float]] | None = None
    if dataset.val is not None:
        spec = spec_of_run(settings, model)
        val_settings = replace(eval_settings(settings, test_normalize(settings, spec), spec), rerank=False,
                               save_features=None, flip=False, mq_pooling="average")

        def validate(m: ReidModel) -> tuple[float, float]:
            result = evaluate_test_set(m, dataset.val, policy, val_settings, verbose=False, ctx=ctx)["single_query"]
            return float(result["mAP"]), float(result["cmc"][0])

        validator = validate

    targets, extras = None, []
    if distill is not None:
        from bpm.engine.distillation import distill_targets

        teacher, extras = distill
        targets = distill_targets(teacher, settings.train, [*dataset.train, *extras], settings.folder,
                                  spec_of_run(settings, model), ctx)
    parts = build_training(settings.train, policy, model, dataset.train, ctx, input_spec=spec_of_run(settings, model),
                           distill=targets, extra_records=extras)
    return Trainer(parts, settings.folder, validator)


def _train(settings: RunSettings, trainer: Trainer, ctx: distributed.DistContext) -> ReidModel:
    logger = RunLogger(settings.folder, tensorboard=settings.output.log_to_file) if ctx.is_main else None
    try:
        trainer.fit(logger)
    finally:
        if logger is not None:
            logger.close()
    return trainer.bare_model
