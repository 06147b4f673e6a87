# %% [markdown]
# # 3 · Feature autoencoder
#
# EDCSTFN and GAN-STFM compare prediction and observation not only pixel by pixel but also in the
# feature space of a frozen encoder. That encoder is the first half of an hourglass autoencoder
# (GAN-STFM's: 6 → 16 → 32 → 64 → 128 channels, down to 1/8 resolution) that this stage trains on
# the **training dates' fine images only** and writes to `data/autoencoders/<dataset>/autoencoder.pt`.
# The models load it strictly, so a missing or mismatched file is an error: the public EDCSTFN code
# loaded nothing and trained against a randomly initialised "feature" network.

# %% tags=["parameters"]
dataset = "cia-sim"
seed = 42
tier = "quick"
settings = None  # this model's settings at the tier, from params.yaml (None: read params.yaml)
train = {}
workspace = None

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from stfusion.data.datacube import open_cube
from stfusion.data.splits import Splits
from stfusion.methods.models import AUTOENCODER
from stfusion.paths import Workspace
from stfusion.data.images import show_true_colour
from stfusion.train.config import resolve_settings
from stfusion.train.run import run_autoencoder
from stfusion.inference.weights import load_model
from stfusion.units import to_reflectance

ws = Workspace.resolve(workspace)
cube = open_cube(ws.cube(dataset))
split = Splits.load(ws.splits(dataset))
config = resolve_settings(AUTOENCODER, tier, settings)
print(f"training dates: {', '.join(split.train_dates)}; validation: {', '.join(t for _, t in split.val)}")

# %%
record = run_autoencoder(cube, split, ws.autoencoder(dataset), seed=seed, config=config,
                         checkpoint_dir=ws.checkpoints(dataset, AUTOENCODER), tier=tier, train_options=train)
{k: record[k] for k in ("parameters", "train_seconds", "best_epoch", "best_val_rmse")}

# %% [markdown]
# A validation date's fine image and its reconstruction (the autoencoder never saw this date), at most
# 1024 × 1024 pixels of it: one forward pass over a whole real scene would hold gigabytes of activations.

# %%
model, _ = load_model(ws.autoencoder(dataset) / "autoencoder.pt", expected=AUTOENCODER)
date = split.val[0][1]
image = np.nan_to_num(to_reflectance(cube["fine"].sel(time=date).values[:, :1024, :1024]))
with torch.inference_mode():
    rebuilt = model(torch.from_numpy(image)[None].float())[0].numpy()
show_true_colour({f"observed · {date}": image, f"reconstructed · {date}": rebuilt}, bands=cube["band"].values)
plt.show()
