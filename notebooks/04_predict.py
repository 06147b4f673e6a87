# %% [markdown]
# # 4 · Predict with the methods that need no training
#
# One run of this notebook predicts the full scene of every test pair of one dataset with one method
# that needs no training (DVC runs it for every dataset × baseline). Predictions are float GeoTIFFs
# in `data/predictions/<dataset>/<method>/`, with `run.json` recording the timings.
#
# - `persistence` (F2 = F1) and `temporal-difference` (F2 = F1 + C2 − C1) are the trivial
#   baselines every fusion model must beat.
# - `starfm` and `fsdaf` are the traditional methods (docs/methods/starfm.md, docs/methods/fsdaf.md).

# %% tags=["parameters"]
dataset = "cia-sim"
method = "temporal-difference"
workspace = None

# %%
import matplotlib.pyplot as plt
import numpy as np

from stfusion.data.datacube import open_cube, reflectance
from stfusion.data.images import true_colour
from stfusion.data.raster import read_geotiff
from stfusion.data.splits import Splits
from stfusion.inference.predict import prediction_name, predict_split
from stfusion.methods.registry import get_method
from stfusion.paths import Workspace

ws = Workspace.resolve(workspace)
cube = open_cube(ws.cube(dataset))
split = Splits.load(ws.splits(dataset))
chosen = get_method(method)
print(f"{chosen.name} ({chosen.family}): {chosen.description}")

# %%
out_dir = ws.predictions(dataset, method)
record = predict_split(chosen, cube, split, out_dir)
{k: record.get(k) for k in ("method", "family", "parameters", "predict_seconds")}

# %% [markdown]
# The first test prediction next to the observation:

# %%
pair = split.test[0]
prediction = read_geotiff(out_dir / prediction_name(pair)).data
observed = reflectance(cube["fine"].sel(time=pair[1]).values)
fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), constrained_layout=True)
for ax, image, title in zip(axes, (prediction, observed), (f"{method}", "observed")):
    ax.imshow(true_colour(np.nan_to_num(image) * 10000))
    ax.set_title(f"{title} · {pair[1]}")
    ax.set_axis_off()
plt.show()
