"""Recipes: the seeds' five studies as YAML compositions of prepare, ladder, tune and train steps.

``run_recipe("s0_faces_ladder", data, out)`` prepares the cache, runs the steps, and tests the
model best on validation once, with the seed's published figures beside the measured one.
``write_standin`` makes the data each recipe runs on where the seed's own is not at hand.
"""

from ._recipe import (
    LadderStep,
    PrepareSpec,
    Published,
    Recipe,
    SourceSpec,
    StandinSpec,
    Step,
    TrainStep,
    TuneStep,
    list_recipes,
    load_recipe,
)
from ._runner import Candidate, run_recipe, write_standin
from ._standins import (
    FASHION_MNIST_DIR,
    STANDINS,
    fashion_mnist_arrays,
    fashion_mnist_as_cifar,
    fashion_mnist_as_imagenette,
    read_marker,
    synthetic_faces,
    write_cifar_batches,
)
from ._subset import SubsetSource, subset_items

__all__ = [
    "FASHION_MNIST_DIR",
    "STANDINS",
    "Candidate",
    "LadderStep",
    "PrepareSpec",
    "Published",
    "Recipe",
    "SourceSpec",
    "StandinSpec",
    "Step",
    "SubsetSource",
    "TrainStep",
    "TuneStep",
    "fashion_mnist_arrays",
    "fashion_mnist_as_cifar",
    "fashion_mnist_as_imagenette",
    "list_recipes",
    "load_recipe",
    "read_marker",
    "run_recipe",
    "subset_items",
    "synthetic_faces",
    "write_cifar_batches",
    "write_standin",
]
