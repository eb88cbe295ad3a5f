"""What ``bpm export`` is asked to do (:class:`ExportOptions`) and the images it works with
(:class:`ImageSets`): plain records shared by the pipeline and every export format's entry."""
from __future__ import annotations

from dataclasses import dataclass, field

from bpm.data.records import TestSet
from bpm.export.quantize import MAX_FP32_LAYERS
from bpm.models.input_spec import InputSpec
from bpm.settings import DataSettings, ModelSettings, PrecisionSettings


@dataclass(frozen=True)
class ExportOptions:
    """What ``bpm export`` does: the source file, the model, precision and data groups of the switches
    (:mod:`bpm.settings`, not re-declared here), and the export's own choices."""

    weights: str
    out_dir: str
    formats: tuple[str, ...] = ()  # names in bpm.export.formats; (): its default formats
    # Network, last stride and input size: what is left unset (or None), the weights file decides.
    model: ModelSettings = field(default_factory=ModelSettings)
    precision: PrecisionSettings = field(default_factory=PrecisionSettings)  # opt_level: the 'pt' file's
    data: DataSettings | None = None  # calibration and verification images, and the accuracy check
    calib_images: str | None = None
    calib_count: int = 200
    verify_count: int = 64
    evaluate: bool = True
    max_map_drop: float = 1.0
    bake_normalization: bool = False
    input_name: str = "images"
    output_name: str = "features"
    legacy_names: bool = False
    quant_format: str = "qdq"
    calib_method: str = "mse"
    int8_equalize: bool = True
    int8_sensitivity: int = 0
    int8_weight_bits: int = 8  # 7: no AVX2 saturation, so no slow exact kernels there (bpm.export.quantize)
    max_fp32_layers: int = MAX_FP32_LAYERS  # layers an INT8 export may leave in FP32 to pass its check (bpm.export.quantize)
    qat_epochs: int | None = None  # None: fine-tune only when post-training INT8 misses its held-out check
    qat_lr: float = 1e-4
    opset: int = 17
    name: str = ""
    batch_size: int = 32
    threads: int = 0
    file_names: dict[str, str] = field(default_factory=dict)
    input_spec: InputSpec | None = None  # set by run_export from the loaded model (bpm.load_model): the size used


@dataclass
class ImageSets:
    calibration: list[str]
    verification: list[str]
    description: str
    test_set: TestSet | None = None
    #: Images INT8 fine-tuning may learn from (training identities only; the calibration pool).
    training: list[str] = field(default_factory=list)

    def held_out(self, count: int = 64) -> list[str]:
        """Images of the calibration pool that calibration does not use: what INT8 choices are
        checked on (never the verification images, which judge the result)."""
        used = set(self.calibration)
        rest = [path for path in self.training if path not in used]
        if len(rest) <= count:
            return rest
        return [rest[round(i * (len(rest) - 1) / (count - 1))] for i in range(count)]
