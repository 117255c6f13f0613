"""Export: ONNX with preprocessing in its metadata and a checked output parity."""

from ._onnx import PARITY_ATOL, ExportResult, export_onnx

__all__ = ["PARITY_ATOL", "ExportResult", "export_onnx"]
