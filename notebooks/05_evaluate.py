# %% [markdown]
# # 5 · Evaluate
#
# Every prediction of every method is scored against the observed fine image of its test
# target date, on the pixels valid in the inputs and the target. The stage writes
#
# - `reports/tables/scores.csv`: one tidy row per dataset, method, family, reference date, target
#   date, band, region, metric and value;
# - `reports/tables/rmse_<dataset>.md` and `ablation_<dataset>.md`: the tables, labelled with
#   their data and profile;
# - `reports/tables/runs.csv`: parameters, training and inference time per method;
# - `reports/metrics/<dataset>.json`: the DVC metrics (`dvc metrics show`).

# %% tags=["parameters"]
datasets = ["cia-sim"]
methods = ["temporal-difference"]  # what 03_train produces with its defaults
variants = [
    {"name": "without-coarse-change", "method": "persistence"},
    {"name": "with-coarse-change", "method": "temporal-difference"},
]
profile = "smoke"
workspace = None

# %%
from IPython.display import Markdown, display

from stfusion.evaluate import evaluate_study
from stfusion.paths import Workspace

ws = Workspace.resolve(workspace)
results = evaluate_study(ws, datasets, methods, variants, profile)
for text in results["markdown"].values():
    display(Markdown(text))

# %%
results["scores"].head(12)
