# %% [markdown]
# # 10 · Robustness: every method on degraded inputs
#
# One run of this notebook sweeps one dataset. Each test pair is predicted again with one input made
# worse at a time (docs/metrics.md, "Robustness"):
#
# - `clouds`: a share of the fine reference lost under cloud;
# - `geolocation`: the target coarse image displaced by a fraction of a coarse pixel or more;
# - `coarse_noise`: noise on every coarse pixel of both coarse images;
# - `time_gap`: the reference is the 2nd, 3rd, ... nearest earlier date instead of the nearest.
#
# The deep models are **not retrained**: the train stage's run with the study's seed is applied to the
# degraded inputs. The undegraded inputs are scored from the predictions the predict and train stages
# wrote, not predicted again. Outputs go to `reports/robustness/<dataset>/`.

# %% tags=["parameters"]
dataset = "cia-sim"
methods = ["persistence", "temporal-difference", "starfm", "fsdaf"]
seed = 42
levels = {"clouds": [0.0, 0.3], "geolocation": [0.0, 1.0], "coarse_noise": [0.0, 0.02], "time_gap": [1, 2]}
profile = "default"
dpi = 150
workspace = None

# %%
from IPython.display import Image, Markdown, display

from stfusion.data.datacube import open_cube
from stfusion.data.datasets import get_dataset
from stfusion.data.splits import Splits
from stfusion.evaluation.robustness import stored_predictions, sweep
from stfusion.inference.trained import study_method
from stfusion.paths import Workspace
from stfusion.reporting.robustness import write_robustness

ws = Workspace.resolve(workspace)
cube = open_cube(ws.cube(dataset))
split = Splits.load(ws.splits(dataset))
chosen = [study_method(name, ws, dataset, seed=seed) for name in methods]
print("test pairs:", split.test)

# %%
written = stored_predictions({m.name: ws.predictions(dataset, m.name, seed if m.trainable else None) for m in chosen})
table = sweep(cube, split, chosen, levels, seed=seed, stored=written)
out_dir = write_robustness(table, ws.robustness(dataset), dataset=dataset, label=get_dataset(dataset).label(profile),
                           dpi=dpi)

# %% [markdown]
# What the sweep measured, and RMSE against each degradation (one line per method; colour = family):

# %%
display(Markdown((out_dir / "summary.md").read_text()))
display(Image(filename=str(out_dir / "robustness.png")))
