"""``--resume true`` with switches that differ from the checkpoint's: refuse or apply, never ignore.

Why: a resumed run used to take the optimizer's settings from the checkpoint whatever the
command line said (``--weight_decay 0`` was recorded in ``config.json`` but 5e-4 was used), and
``--optimizer sgd`` on an Adam checkpoint crashed with ``KeyError: 'momentum'`` after rewriting
``config.json``. This module runs before the experiment folder is touched: switches that define the
model, the optimizer's state or the data order must match (one line names them all); the others
are applied and listed, and the checkpoint records the settings each run actually used.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bpm.engine.checkpoint import resumable_state_dicts
from bpm.engine.train_config import TrainConfig
from bpm.errors import BpmError
from bpm.losses.term import LOSS_TERMS
from bpm.models.registry import backbone_choices, canonical_name

# Changing these would make the checkpoint's weights, optimizer state or data position mean
# something else: refused.
FIXED = ("optimizer", "recipe", "ids_per_batch", "ims_per_id", "sampler_epoch",
         "teacher", "teacher_input", "distill_extra", "distill_extra_per_batch")  # targets, extra batches
FIXED_LOSS = ("id_loss_weight", "center_loss_weight")  # they decide the ID head / centre buffers
FIXED_ON_OFF = ("distill_weight",)  # on or off decides the distillation projection head; its value may change


def stored_config(ckpt: dict) -> dict[str, Any]:
    """The training settings a checkpoint was written with (``{}`` for older checkpoints)."""
    found = ckpt.get("train_config")
    return dict(found) if isinstance(found, dict) else {}


def optimizer_kind(optimizer_state: Any) -> str | None:
    """``adam``/``sgd`` judged from a saved optimizer state's param groups (older checkpoints)."""
    groups = optimizer_state.get("param_groups") if isinstance(optimizer_state, dict) else None
    if not groups or not isinstance(groups[0], dict):
        return None
    if "betas" in groups[0]:
        return "adam"
    if "nesterov" in groups[0] or "dampening" in groups[0]:
        return "sgd"
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _canonical_net(name: str) -> str:
    return canonical_name(name) if name in backbone_choices() else name


def check_resume(ckpt: dict, cfg: TrainConfig, model_facts: dict[str, Any], path: str | Path) -> list[str]:
    """Refuse incompatible changes in one line; return ``"name old -> new"`` for the applied ones.

    ``model_facts`` are this run's ``net``, ``architecture``, ``num_classes`` and ``resize_h_w``
    (compared with the checkpoint's own record of them).
    """
    resumable_state_dicts(ckpt, path)  # [model, optimizer], or one line
    refused: list[str] = []
    for key in ("net", "architecture", "num_classes"):
        old, new = ckpt.get(key), model_facts.get(key)
        if key == "net" and isinstance(old, str) and isinstance(new, str):
            old, new = _canonical_net(old), _canonical_net(new)  # mobilenetV2 (older checkpoints) is mobilenet_v2
        if old is not None and new is not None and not _same(old, new):
            refused.append(f"{key} {old} -> {new}")
    # The input size: the checkpoint's input record (older checkpoints: their training settings).
    old_size = (ckpt.get("input") or {}).get("resize_h_w") if isinstance(ckpt.get("input"), dict) else None
    old_size = old_size or stored_config(ckpt).get("resize_h_w")
    new_size = model_facts.get("resize_h_w")
    if old_size is not None and new_size is not None and not _same(old_size, new_size):
        refused.append(f"resize_h_w {tuple(old_size)} -> {tuple(new_size)}")
    state_dicts = ckpt.get("state_dicts") or [None, None]
    old_cfg = stored_config(ckpt)
    # The recorded name; older checkpoints (no record) are judged from the saved param groups.
    saved_kind = old_cfg.get("optimizer") or optimizer_kind(state_dicts[1] if len(state_dicts) > 1 else None)
    if saved_kind is not None and saved_kind != cfg.optimizer:
        refused.append(f"optimizer {saved_kind} -> {cfg.optimizer}")
    new_cfg = dataclasses.asdict(cfg)
    applied: list[str] = []
    for key, new in new_cfg.items():
        # The data order continues from the checkpoint's sampler seed whatever --seed says.
        if key in ("loss", "seed") or key not in old_cfg or _same(old_cfg[key], new):
            continue
        line = f"{key} {old_cfg[key]} -> {new}"
        if key in FIXED:
            if key != "optimizer" or saved_kind is None:
                refused.append(line)
        else:
            applied.append(line)
    for line, fixed in _loss_changes(old_cfg.get("loss") or {}, new_cfg["loss"]):
        (refused if fixed else applied).append(line)
    if refused:
        raise BpmError(f"{path}: --resume true with switches that change what the checkpoint holds: "
                       f"{', '.join(refused)}; resume with the checkpoint's settings (see config.json) or train "
                       "afresh in another --exp_dir")
    return applied


def _loss_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, bool]]:
    """``("name old -> new", refused)`` for each changed loss setting; a term's weight follows the term's
    :attr:`~bpm.losses.term.LossTerm.on_resume` rule (its state may not appear, vanish or change meaning)."""
    terms = [LOSS_TERMS.get(name) for name in LOSS_TERMS.names()]
    rules = {term.weight_switch: term.on_resume for term in terms}
    by_name = {term.name: term.weight_switch for term in terms}
    pairs = [(key, old.get(key, value), value) for key, value in new.items() if key != "weights"]
    old_weights, new_weights = old.get("weights") or {}, new.get("weights") or {}
    pairs += [(by_name.get(name, name), float(old_weights.get(name, 0.0)), float(new_weights.get(name, 0.0)))
              for name in sorted({*old_weights, *new_weights})]
    changes = []
    for key, before, after in pairs:
        if _same(before, after):
            continue
        rule = rules.get(key, "")
        fixed = rule == "fixed" or (rule == "on_off" and (before > 0) != (after > 0))
        changes.append((f"{key} {before} -> {after}", fixed))
    return changes


def apply_to_optimizer(optimizer, cfg: TrainConfig) -> None:
    """Push this run's ``weight_decay`` (and SGD's ``momentum``) into the restored param groups,
    which ``load_state_dict`` filled with the checkpoint's values. The learning rate is set from
    ``--base_lr`` and the schedule at every epoch anyway."""
    for group in optimizer.param_groups:
        group["weight_decay"] = cfg.weight_decay
        if "momentum" in group:
            group["momentum"] = cfg.momentum
