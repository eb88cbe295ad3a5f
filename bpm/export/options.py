"""What ``bpm export`` is asked to do (:class:`ExportOptions`) and the images it works with
(:class:`ImageSets`): plain records shared by the pipeline and every export format's entry."""
from __future__ import annotations

from dataclasses import dataclass, field

from bpm.data.records import TestSet
from bpm.models.input_spec import InputSpec


@dataclass
class ExportOptions:
    weights: str
    out_dir: str
    net: str | None = None
    formats: tuple[str, ...] = ()  # names in bpm.export.formats; (): its default formats
    resize_h_w: tuple[int, int] | None = None  # None: the weights file's (bpm.models.meta), else 256x128
    last_conv_stride: int | None = None        # None: the weights file's, else 1
    opt_level: str = "O0"
    keep_batchnorm_fp32: bool = True
    dataset: str | None = None
    data_root: str | None = None
    cuhk03_type: str = "detected"
    calib_images: str | None = None
    calib_count: int = 200
    verify_count: int = 64
    evaluate: bool = True
    max_map_drop: float = 1.0
    bake_normalization: bool = False
    input_name: str = "images"
    output_name: str = "features"
    legacy_names: bool = False
    quant_format: str = "qoperator"
    calib_method: str = "mse"
    int8_equalize: bool = True
    int8_sensitivity: int = 0
    qat_epochs: int = 0
    qat_lr: float = 1e-4
    opset: int = 17
    name: str = ""
    batch_size: int = 32
    threads: int = 0
    file_names: dict[str, str] = field(default_factory=dict)
    input_spec: InputSpec | None = None  # set by run_export from the loaded model (bpm.load_model)


@dataclass
class ImageSets:
    calibration: list[str]
    verification: list[str]
    description: str
    test_set: TestSet | None = None
    #: Images INT8 fine-tuning may learn from (training identities only; the calibration pool).
    training: list[str] = field(default_factory=list)
