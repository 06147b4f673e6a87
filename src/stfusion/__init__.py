"""stfusion: a reproducible study of spatiotemporal fusion (STF) of Landsat and MODIS images.

Data flows one way: raw files -> datacube -> samples -> model -> prediction -> metrics -> tables
and figures. Each step lives in its own module:

- ``stfusion.data``: readers (GeoTIFF, ENVI), synthetic scenes, real-data download, datacube,
  split manifest and patch samplers.
- ``stfusion.methods.baselines``: methods that need no training (the reference predictors; STARFM and
  FSDAF later).
- ``stfusion.methods.registry``: the registry of every method in the study.
- ``stfusion.inference.predict``, ``stfusion.evaluation.scores``, ``stfusion.reporting.plots``, ``stfusion.reporting.report``: predictions,
  scores, figures and tables.
- ``stfusion.pipeline.stages``: the notebook runner that DVC calls.
"""

import os
import platform

# Same seed, same numbers on any x86-64 CPU: torch picks AVX-512 kernels where the CPU has them, and
# their float sums differ from the AVX2 kernels' in the last bits, which training amplifies. The study
# uses AVX2 everywhere (set before torch is imported; a value you set yourself wins).
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")

__version__ = "0.1.0"

BANDS = ("blue", "green", "red", "nir", "swir1", "swir2")
"""Band order of every image in the study (Landsat TM/ETM+ bands 1, 2, 3, 4, 5, 7)."""
