# %% [markdown]
# # 4 · Ablation
#
# Every configuration listed under `ablation.variants` in params.yaml is trained and run on the
# test pairs of one dataset; the evaluate stage scores them and builds the ablation tables.
#
# Until MCBAM-GAN lands, the variants ablate the one component the reference predictors differ
# by: the coarse sensor's temporal change (`persistence` leaves it out, `temporal-difference`
# adds it).

# %% tags=["parameters"]
dataset = "cia-sim"
variants = [
    {"name": "without-coarse-change", "method": "persistence"},
    {"name": "with-coarse-change", "method": "temporal-difference"},
]
seed = 42
workspace = None

# %%
import pandas as pd

from stfusion.data.datacube import open_cube
from stfusion.data.splits import Splits
from stfusion.io import atomic_dir
from stfusion.methods import get_method
from stfusion.paths import Workspace
from stfusion.predict import predict_split

ws = Workspace.resolve(workspace)
cube = open_cube(ws.cube(dataset))
split = Splits.load(ws.splits(dataset))

records = []
with atomic_dir(ws.ablation(dataset)) as tmp:
    for variant in variants:
        records.append(predict_split(get_method(variant["method"]), cube, split, tmp / variant["name"],
                                     extra={"variant": variant["name"], "seed": seed}))
pd.DataFrame([{"variant": r["variant"], "method": r["method"], "parameters": r["parameters"]} for r in records])
