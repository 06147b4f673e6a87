# %% [markdown]
# # 7 · Evaluate
#
# Every prediction of every method is scored against the observed fine image of its test target
# date, on the pixels valid in the inputs and the target, with `stfusion.evaluation.metrics`: RMSE, MAE, bias,
# PSNR, SSIM, SAM, ERGAS, CC and UIQI, per band and overall, over all pixels and separately over
# the pixels whose land cover changed between the reference and the target date (and the rest).
# A deep model has one run per training seed; the per-pixel mean of its seeds is scored as a method
# of its own, `<model>-ensemble`, with the seeds' spread as its uncertainty map. Which differences
# are real is decided by a paired bootstrap over test pairs, seeds and spatial blocks
# (`stfusion.evaluation.significance`, docs/metrics.md). The stage writes, atomically:
#
# - `reports/tables/scores.csv` (and `ablation_scores.csv`): one tidy row per dataset, method, seed,
#   family, reference date, target date, band, region, metric and value;
# - `reports/tables/differences.csv` and `ranking.csv`: RMSE differences with their intervals against
#   temporal-difference, against the best traditional method and between deep models, and the ranking;
# - `reports/tables/coverage.csv` and `uncertainty.csv`: calibration of every uncertainty map (the
#   ensembles' seed spread, STFDiff's sample spread): coverage of a nominal 90 % interval, spread-skill deciles;
# - `reports/tables/runs.csv`: learnable parameters, training time and median full-scene inference
#   time per run, as measured by the train and ablation stages;
# - `reports/tables/metrics_<dataset>.md`, `significance_<dataset>.md`, `ablation_<dataset>.md` and
#   `paper/`: the study's tables (mean ± sd over seeds) and the papers' tables rebuilt next to their
#   published values, in Markdown and LaTeX;
# - `reports/tables/conventions.json`: the metric settings and where the change mask came from;
# - `reports/metrics/<dataset>.json`: the DVC metrics (`dvc metrics show`): the headline scores of each method;
# - `data/ensembles/<dataset>/<model>-ensemble/`: the ensembles' predictions and spread maps;
# - `data/models/<dataset>/<model>/seed-<seed>.safetensors`: every trained model exported with its card
#   (training data, settings, device, time, code version and these test scores), the files `dvc get` fetches
#   and `stfusion fuse --weights` and `stfusion info weights` read (docs/sharing.md).

# %% tags=["parameters"]
datasets = ["cia-sim"]
methods = ["temporal-difference"]  # what 04_predict produces with its defaults
models = []  # methods.models: the deep models, trained once per seed
seed = 42  # the study's seed (the ablation's full-model rows; the bootstrap's draws)
seeds = [42]  # the training seeds of the deep models
variants = []  # ablation.variants: MCBAM-GAN variants trained by the ablation stage
ablation_model = "mcbam-gan"
full_model_rows = []  # ablation rows filled by the ablation model's own train-stage run
profile = "smoke"
settings = {"change_threshold": 0.05}
workspace = None

# %%
from IPython.display import Markdown, display

from stfusion.reporting.exports import export_models
from stfusion.reporting.results import evaluate_study
from stfusion.paths import Workspace

ws = Workspace.resolve(workspace)
results = evaluate_study(ws, datasets, methods, variants, profile, settings, models=models, seed=seed, seeds=seeds,
                         ablation_model=ablation_model, full_model_rows=full_model_rows)
print(f"scored {results['scores'].groupby(['dataset', 'method', 'target_date']).ngroups} predictions "
      f"in {results['seconds']:.1f} s")
for text in results["markdown"].values():
    display(Markdown(text))

# %% [markdown]
# The tidy table holds every number above; filter it like any data frame, e.g. the NIR RMSE of
# each method over the changed pixels:

# %%
scores = results["scores"]
scores[(scores["band"] == "nir") & (scores["metric"] == "rmse") & (scores["region"] == "changed")]

# %% [markdown]
# Measured cost of each method (parameters, training seconds, median full-scene inference seconds):

# %%
results["runs"]

# %% [markdown]
# Every trained model, exported with its card (what `stfusion info weights PATH` prints):

# %%
exported = export_models(ws, datasets, models, seeds, results["scores"])
print(f"exported {len(exported)} trained model(s) to {ws.root / 'data' / 'models'}")
