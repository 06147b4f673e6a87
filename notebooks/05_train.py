# %% [markdown]
# # 5 · Train and predict
#
# One run of this notebook trains one deep model on one dataset with one seed (DVC runs it for every
# dataset × model × seed of `seeds`) and predicts the full scene of every test pair. Predictions are
# float GeoTIFFs in `data/predictions/<dataset>/<method>/seed-<seed>/`, with `run.json` recording
# parameter count and timings. The seed fixes the initial weights and every training patch.
#
# - The deep models (CNN: `dcstfn`, `edcstfn`; GAN: `gan-stfm`, `mcbam-gan`; Transformer: `swinstfm`;
#   diffusion: `stfdiff`) are trained with Lightning on patches of the training pairs, at the tier
#   `train.tier` of params.yaml (`quick` on a CPU, `paper` for the full reproduction). The
#   checkpoint with the lowest RMSE on the **validation** pairs is kept (test pairs are never seen),
#   exported as `model.pt`, and run over each test scene in overlapping tiles. STFDiff predicts by
#   DDIM sampling from one noise field per scene; with `uncertainty_samples` it writes the mean of
#   its samples and, beside it, their per-pixel standard deviation (`*_std.tif`).

# %% tags=["parameters"]
dataset = "cia-sim"
method = "dcstfn"
seed = 42
tier = "quick"
settings = None  # this model's settings at the tier, from params.yaml (None: read params.yaml)
train = {}
workspace = None

# %%
import matplotlib.pyplot as plt

from stfusion.data.datacube import open_cube
from stfusion.data.raster import read_geotiff
from stfusion.data.splits import Splits
from stfusion.methods.registry import get_method
from stfusion.methods.models import get_model_spec
from stfusion.paths import Workspace
from stfusion.data.images import show_true_colour
from stfusion.inference.predict import prediction_name
from stfusion.train.config import resolve_settings
from stfusion.train.run import run_method
from stfusion.units import to_reflectance

ws = Workspace.resolve(workspace)
cube = open_cube(ws.cube(dataset))
split = Splits.load(ws.splits(dataset))
chosen = get_method(method)
print(f"{chosen.name} ({chosen.family}): {chosen.description}")
config = resolve_settings(method, tier, settings)
print(f"tier {tier}: {config.epochs} epochs × {config.steps_per_epoch} steps of {config.batch_size} "
      f"patches of {config.patch_size} px; architecture {config.arch}")

# %%
encoder = ws.autoencoder(dataset) / "autoencoder.pt" if get_model_spec(method).feature_encoder else None
out_dir = ws.predictions(dataset, method, seed)
record = run_method(method, cube, split, out_dir, seed=seed, config=config, tier=tier,
                    checkpoint_dir=ws.checkpoints(dataset, method, seed), feature_encoder_path=encoder,
                    train_options=train)
{k: record.get(k) for k in ("method", "family", "parameters", "train_seconds", "best_epoch", "predict_seconds")}

# %% [markdown]
# The first test prediction next to the observation:

# %%
pair = split.test[0]
show_true_colour({f"{method} · {pair[1]}": read_geotiff(out_dir / prediction_name(pair)).data,
                  f"observed · {pair[1]}": to_reflectance(cube["fine"].sel(time=pair[1]).values)},
                 bands=cube["band"].values)
plt.show()
