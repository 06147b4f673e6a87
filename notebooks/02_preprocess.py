# %% [markdown]
# # 2 · Preprocess
#
# The raw files are verified against their manifest (size and SHA-256), read, checked for a
# common grid and band count, and stacked into one CF-style NetCDF datacube per dataset
# (`data/processed/<dataset>/cube.nc`, dims time/band/y/x, int16 reflectance × 10000, a valid-pixel
# mask and the CRS). The same stage writes the split manifest (`splits.json`) that every method
# reads: test target dates are held out of training and of checkpoint selection.

# %% tags=["parameters"]
dataset = "cia-sim"
splits = {}
workspace = None

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from stfusion.data.preprocess import preprocess_dataset
from stfusion.paths import Workspace

ws = Workspace.resolve(workspace)
cube, split = preprocess_dataset(ws.raw(dataset), ws.processed(dataset), splits)
cube

# %% [markdown]
# ## Split manifest
# Each row is one (reference date, target date) pair.

# %%
pd.DataFrame([{"split": name, "reference": ref, "target": target}
              for name in ("train", "val", "test") for ref, target in split.pairs(name)])

# %% [markdown]
# ## What changes over time
# Mean NDVI of the fine and the coarse images per date: the seasonal signal that fusion must
# transfer from the coarse to the fine scale.

# %%
def mean_ndvi(images: np.ndarray, valid: np.ndarray) -> np.ndarray:
    red, nir = images[:, 2].astype(float), images[:, 3].astype(float)
    ndvi = (nir - red) / np.maximum(nir + red, 1)
    return np.array([ndvi[t][valid[t] > 0].mean() for t in range(len(ndvi))])


valid = cube["valid"].values
dates = pd.to_datetime(cube["time"].values)
fig, ax = plt.subplots(figsize=(8, 3.5), constrained_layout=True)
ax.plot(dates, mean_ndvi(cube["fine"].values, valid), "o-", label="fine (Landsat-like)")
ax.plot(dates, mean_ndvi(cube["coarse"].values, valid), "s--", label="coarse (MODIS-like)")
for _, target in split.test:
    ax.axvline(pd.Timestamp(target), color="0.6", lw=0.8, ls=":")
ax.set(xlabel="date", ylabel="mean NDVI (unitless)", title=f"{dataset}: mean NDVI per date (dotted: test targets)")
ax.legend()
plt.show()
