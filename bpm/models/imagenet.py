"""``--net_pretrained_path``: where the backbone's initial weights come from.

* ``imagenet`` (the training default, as the original always started from ImageNet): the backbone's
  declared ImageNet source: torchvision's weights (:attr:`BackboneSpec.imagenet_weights`, e.g.
  ``MobileNet_V2_Weights.IMAGENET1K_V1``) through torchvision's weights API, downloaded once into
  torch's hub cache, ``$TORCH_HOME/hub/checkpoints/`` (``TORCH_HOME`` defaults to ``~/.cache/torch``),
  and read from there afterwards (offline, copy it there by hand); or, for a network torchvision
  does not ship, a file name in that cache (:attr:`BackboneSpec.imagenet_file`) put there by hand.
* ``none`` (or the empty string, the original's default): random weights, nothing is read.
* anything else: a local file: an ImageNet file in torchvision's layout or the original's
  ``mobilenet_v2.pth.tar`` (tonylins) layout, or a re-ID checkpoint/weights file (its backbone
  only). A file literally named ``imagenet`` or ``none`` is given as ``./imagenet``.
"""
from __future__ import annotations

import contextlib
import http.client
import os
import socket
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

import torch
from torch import nn

from bpm.errors import BpmError, one_line
from bpm.models.registry import BackboneSpec, StateDict, get_backbone
from bpm.models.weights import extract_model_state, imagenet_trunk_state, load_trunk_state, read_weights_file

IMAGENET = "imagenet"
RANDOM = ("none", "")
#: Seconds a download may wait on the network for any one operation (connect, read) before giving up.
DOWNLOAD_TIMEOUT_S = 30.0


def imagenet_cache_file(spec: BackboneSpec) -> Path:
    """Where ``spec``'s ImageNet file is kept: ``<torch hub dir>/checkpoints/<url name or declared file name>``."""
    name = os.path.basename(urlparse(spec.imagenet_weights.url).path) if spec.imagenet_weights is not None \
        else spec.imagenet_file
    return Path(torch.hub.get_dir()) / "checkpoints" / name


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """torch.hub's ``urlopen`` has no timeout argument; the process default is what it uses."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def fetch_imagenet_state(spec: BackboneSpec, progress: bool = True,
                         timeout: float = DOWNLOAD_TIMEOUT_S) -> tuple[StateDict, Path]:
    """``spec``'s ImageNet state_dict and the cached file it came from.

    A cached file is read without touching the network. Otherwise torchvision's weights API
    downloads it (the hash prefix in the file name is checked); when that fails (offline, a
    timeout, a bad hash), or the backbone has no torchvision weights, the error is one line
    saying which file to put where.
    """
    cached = imagenet_cache_file(spec)
    if cached.is_file():
        try:
            return extract_model_state(read_weights_file(cached), cached), cached
        except BpmError as exc:
            raise BpmError(f"{exc}; delete it to download it again, or pass --net_pretrained_path none "
                           f"or a local weights file") from None
    if spec.imagenet_weights is None:
        raise BpmError(f"--net_pretrained_path imagenet: {spec.name}'s ImageNet file {cached.name} is not in "
                       f"{cached.parent}/ (torch's hub cache, $TORCH_HOME/hub/checkpoints); put it there, or pass "
                       f"--net_pretrained_path none (random weights) or --net_pretrained_path <local weights file>")
    try:
        with _socket_timeout(timeout):
            state = spec.imagenet_weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except (OSError, http.client.HTTPException, RuntimeError, ValueError) as exc:  # URLError, timeouts are OSError
        reason = one_line(getattr(exc, "reason", None) or exc)  # URLError wraps the socket error in .reason
        raise BpmError(
            f"--net_pretrained_path imagenet: cannot download {cached.name} (torchvision {spec.imagenet_name}) "
            f"from {spec.imagenet_weights.url}: {reason}; put that file in {cached.parent}/ "
            f"(torch's hub cache, $TORCH_HOME/hub/checkpoints), or pass --net_pretrained_path none "
            f"(random weights) or --net_pretrained_path <local weights file>"
        ) from None
    return extract_model_state(state, cached), cached


def init_backbone(model: nn.Module, source: str | None, log: Callable[[str], None] = print,
                  progress: bool = True) -> str:
    """Initialise ``model``'s backbone as ``--net_pretrained_path`` says; returns the line it logged.

    ``source``: ``imagenet``, ``none``/``''`` or a path (see the module docstring). Any failure is a
    one-line :class:`BpmError`.
    """
    text = "" if source is None else str(source).strip()
    if text.lower() in RANDOM:
        return _log(log, f"Initial weights: random (--net_pretrained_path {text or repr('')})")
    if text.lower() == IMAGENET:
        spec = get_backbone(model.net)
        cached = imagenet_cache_file(spec)
        where = f"from {cached}" if cached.is_file() or spec.imagenet_weights is None \
            else f"downloading {spec.imagenet_weights.url} to {cached}"
        source = f"torchvision {spec.imagenet_name}" if spec.imagenet_weights is not None else spec.imagenet_name
        line = _log(log, f"Initial weights: ImageNet ({source}) {where}")
        state, path = fetch_imagenet_state(spec, progress)
        _layout, trunk = imagenet_trunk_state(model, state, path)
        load_trunk_state(model, trunk, path)
        return line
    path = Path(text).expanduser()
    if not path.is_file():
        raise BpmError(f"--net_pretrained_path: {text}: no such file (expected imagenet, none or a weights file)")
    state = extract_model_state(read_weights_file(path), path)
    layout, trunk = imagenet_trunk_state(model, state, path)
    line = _log(log, f"Initial weights: {path} ({layout})")
    load_trunk_state(model, trunk, path)
    return line


def _log(log: Callable[[str], None], line: str) -> str:
    log(line)
    return line
