# %% [markdown]
# # 6 · Figures
#
# One overview figure per dataset (`reports/figures/png/` and `reports/figures/pdf/`): the first test pair's
# reference and observed images, every method's prediction, its error against the observation
# on a shared symmetric scale, and the RMSE per band. Colours follow the method family.

# %% tags=["parameters"]
datasets = ["cia-sim"]
methods = ["temporal-difference"]  # what 03_train produces with its defaults
profile = "smoke"
dpi = 120
workspace = None

# %%
from IPython.display import Image, display

from stfusion.paths import Workspace
from stfusion.plots import figures_study

ws = Workspace.resolve(workspace)
paths = figures_study(ws, datasets, methods, profile, dpi=dpi)
for path in paths:
    if path.suffix == ".png":
        display(Image(filename=str(path)))
