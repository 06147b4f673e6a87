# %% [markdown]
# # 8 · Figures
#
# The study's figures, per dataset, as PNG (`reports/figures/png/`, shown by `dvc plots show` and
# the report) and PDF (`reports/figures/pdf/`). Colours follow the method family everywhere.
#
# - `boxplots`: every metric per family over the test pairs (the review's Figures 16 and 17);
# - `change`: scores over all, changed and unchanged pixels;
# - `scatter`: predicted against observed reflectance per band (the MCBAM-GAN paper's Figures 10, 13);
# - `scene` and `crop`: true colour, NIR false colour, difference and NDVI maps of every method,
#   full scene and zoomed (Figures 8, 9, 11, 12);
# - `training`: loss curves, for methods that train;
# - `uncertainty`: STFDiff's sample spread against its actual error, by decile (when it drew samples);
# - `differences`: a forest plot of every method's RMSE difference from temporal-difference with its
#   bootstrap interval, over all and over changed pixels;
# - `ablation`: the MCBAM-GAN ablation, each metric of the paper's Tables 2-4 against configuration,
#   this study's test pairs beside the published values (when the ablation stage ran).

# %% tags=["parameters"]
datasets = ["cia-sim"]
methods = ["temporal-difference"]  # what 04_predict produces with its defaults
profile = "smoke"
seed = 42  # maps and training curves show each deep model's run with the study's seed
dpi = 80
difference_band = "nir"
crop = {}  # dataset -> {row, col, height, width}; default: a centred square
pairs = {}  # dataset -> [reference, target]; default: the first test pair
workspace = None

# %%
from IPython.display import Image, display

from stfusion.paths import Workspace
from stfusion.reporting.plots import figures_study

ws = Workspace.resolve(workspace)
paths = figures_study(ws, datasets, methods, profile, seed=seed, dpi=dpi, crop=crop, difference_band=difference_band,
                      pairs=pairs)
for path in paths:
    if path.suffix == ".png":
        display(Image(filename=str(path)))
