"""Export: ONNX (raw pixels in, preprocessing in its metadata, checked output parity) and
safetensors + config.json model files that load without unpickling."""

from ._onnx import INPUTS, PARITY_ATOL, ExportResult, export_onnx
from ._safetensors import CONFIG_FORMAT, SafetensorsExport, export_safetensors, is_export, read_export

__all__ = [
    "CONFIG_FORMAT",
    "INPUTS",
    "PARITY_ATOL",
    "ExportResult",
    "SafetensorsExport",
    "export_onnx",
    "export_safetensors",
    "is_export",
    "read_export",
]
