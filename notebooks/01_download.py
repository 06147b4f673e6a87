# %% [markdown]
# # 1 · Download
#
# The first stage of the study makes the raw files of one dataset available in
# `data/raw/<dataset>/`, with a manifest of dates, files and SHA-256 sums.
#
# - **Synthetic** datasets (`cia-sim`, `lgc-sim`) are generated offline: CIA-like irrigated fields
#   with crop phenology, and LGC-like larger fields with a flood.
# - **Real** datasets (`cia`, `lgc`) are downloaded from the CSIRO Data Access Portal, or read
#   from a folder you downloaded yourself (`download.raw_dir` in params.yaml).
#
# The defaults below are tiny and write to `scratch/`, so running this notebook by hand never
# touches the study's DVC-tracked outputs; `dvc repro` passes the values from params.yaml.

# %% tags=["parameters"]
dataset = "cia-sim"
raw_dir = None
scene = {"height": 120, "width": 100, "n_dates": 5}
workspace = None

# %%
import matplotlib.pyplot as plt
import pandas as pd

from stfusion.data.datacube import read_image
from stfusion.data.sources import acquire
from stfusion.paths import Workspace
from stfusion.data.images import show_true_colour
from stfusion.units import to_reflectance

ws = Workspace.resolve(workspace)
manifest = acquire(dataset, ws.raw(dataset), raw_dir=raw_dir, scene=scene)
print(f"{manifest.dataset}: {len(manifest.dates)} dates from {manifest.source} in {manifest.folder}")

# %% [markdown]
# The manifest lists one fine (Landsat-like) and one coarse (MODIS-like) image per date. The
# coarse image is delivered on the fine grid, as the real CIA/LGC MODIS files are.

# %%
files = pd.DataFrame(
    [{"date": e["date"], "role": role, "file": e[role], "sha256": manifest.files[e[role]]["sha256"][:12]}
     for e in manifest.dates for role in ("fine", "coarse")]
)
files

# %%
first, last = manifest.date_list()[0], manifest.date_list()[-1]
show_true_colour({f"{role} · {date}": to_reflectance(read_image(manifest, date, role).data)
                  for date in (first, last) for role in ("fine", "coarse")},
                 f"{dataset}: true colour (red, green, blue), first and last date", bands=manifest.bands)
plt.show()
