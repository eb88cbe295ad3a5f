"""Knowledge distillation from a ready-made teacher: load it, describe its input, cache its embeddings.

A downloaded edge re-ID model trained on larger, more varied data generalises to new people and
cameras better than a small student trained on one data set; distillation lets the student learn
from it. The pieces: :mod:`input_spec` (how a foreign teacher wants its pixels), :mod:`teacher`
(bpm files, ONNX, OpenVINO IR behind one interface), :mod:`cache` (the teacher's embeddings of the
training images, computed once), :mod:`targets` (what the criterion compares against each step),
:mod:`extra` (unlabelled crops only the distillation terms see) and :mod:`options` (switch checks).
The loss terms themselves live with the others, in :mod:`bpm.losses.distill`; what a training run does
with all this, in :mod:`bpm.engine.distillation` (the trainer's layer, as it reads the run's TrainConfig).
"""
