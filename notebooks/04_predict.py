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

from stfusion.data.datacube import open_cube
from stfusion.data.images import show_true_colour
from stfusion.data.raster import read_geotiff
from stfusion.data.splits import Splits
from stfusion.inference.predict import prediction_name, predict_split
from stfusion.methods.registry import get_method
from stfusion.paths import Workspace
from stfusion.units import to_reflectance

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
show_true_colour({f"{method} · {pair[1]}": read_geotiff(out_dir / prediction_name(pair)).data,
                  f"observed · {pair[1]}": to_reflectance(cube["fine"].sel(time=pair[1]).values)},
                 bands=cube["band"].values)
plt.show()
