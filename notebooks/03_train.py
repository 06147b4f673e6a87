# %% [markdown]
# # 3 · Train and predict
#
# One run of this notebook trains one method on one dataset (DVC runs it for every dataset ×
# method) and predicts the full scene of every test pair. Predictions are float GeoTIFFs in
# `data/predictions/<dataset>/<method>/`, with `run.json` recording parameter count and timings.
#
# The reference predictors need no training: `persistence` (F2 = F1) and `temporal-difference`
# (F2 = F1 + C2 − C1) are the trivial baselines every fusion model must beat.

# %% tags=["parameters"]
dataset = "cia-sim"
method = "temporal-difference"
seed = 42
workspace = None

# %%
import matplotlib.pyplot as plt
import numpy as np

from stfusion.data.datacube import open_cube
from stfusion.data.raster import read_geotiff
from stfusion.data.splits import Splits
from stfusion.methods import get_method
from stfusion.paths import Workspace
from stfusion.plots import true_colour
from stfusion.predict import predict_split, prediction_name

ws = Workspace.resolve(workspace)
cube = open_cube(ws.cube(dataset))
split = Splits.load(ws.splits(dataset))
chosen = get_method(method)
print(f"{chosen.name} ({chosen.family}): {chosen.description}")

# %%
out_dir = ws.predictions(dataset, method)
record = predict_split(chosen, cube, split, out_dir, extra={"seed": seed})
{k: record[k] for k in ("method", "family", "parameters", "train_seconds", "predict_seconds")}

# %% [markdown]
# The first test prediction next to the observation:

# %%
pair = split.test[0]
prediction = read_geotiff(out_dir / prediction_name(pair)).data
observed = cube["fine"].sel(time=pair[1]).values / 10000
fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), constrained_layout=True)
for ax, image, title in zip(axes, (prediction, observed), (f"{method}", "observed")):
    ax.imshow(true_colour(np.nan_to_num(image) * 10000))
    ax.set_title(f"{title} · {pair[1]}")
    ax.set_axis_off()
plt.show()
