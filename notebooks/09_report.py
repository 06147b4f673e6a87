# %% [markdown]
# # 9 · Report
#
# Gathers the study into `reports/README.md`, a Markdown page that renders on any Git host: the
# data, profile, git commit and parameters; the headline numbers; the tables the evaluate stage
# wrote (including the papers' tables next to their published values); and every figure with a
# short paragraph on how to read it.

# %% tags=["parameters"]
datasets = ["cia-sim"]
methods = ["temporal-difference"]  # what 04_predict produces with its defaults
profile = "smoke"
params = {"profile": "smoke", "datasets": ["cia-sim"], "methods": ["temporal-difference"]}
workspace = None

# %%
from IPython.display import Markdown, display

from stfusion.paths import Workspace
from stfusion.reporting.report import write_report

ws = Workspace.resolve(workspace)
path = write_report(ws, datasets, methods, profile, params)
print(f"wrote {path}")

# %% [markdown]
# The report as a Git host will show it (figure links resolve relative to `reports/`):

# %%
display(Markdown(path.read_text()))
