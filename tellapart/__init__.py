"""tellapart: labelled images in; the best image classifier a compute budget allows out, with proof."""

from tellapart._errors import UserError

__version__ = "0.1.0"

__all__ = ["UserError", "__version__"]
