# %% [markdown]
# # 6 · Ablation: the MCBAM-GAN paper's Tables 2 to 4
#
# One run of this notebook trains every ablation variant of MCBAM-GAN on one dataset (DVC runs it
# once per dataset) and predicts every test pair, exactly as the train stage does for a method.
# A variant is the model's settings at the study's tier with the overrides of
# `ablation.settings.<variant>` in params.yaml:
#
# | variant | multi-scale (depth) | CBAM | AFF | multi-loss | paper table |
# |---|---|---|---|---|---|
# | `depth-1`, `depth-2` | 1, 2 | ✓ | ✓ | ✓ | 2 |
# | `multi-scale` | 3 | × | × | × | 3, 4 |
# | `cbam` | 1 | ✓ | × | × | 3, 4 |
# | `multi-scale+cbam` | 3 | ✓ | × | × | 3, 4 |
# | `multi-scale+aff` | 3 | × | ✓ | × | 3, 4 |
# | `multi-scale+cbam+aff` | 3 | ✓ | ✓ | × | 3, 4 |
#
# The full model (depth 3 with every module and the multi-loss) is the train stage's `mcbam-gan` run;
# the evaluate stage puts it in the `depth-3` and `multi-scale+cbam+aff+multi-loss` rows. Without the
# multi-loss a variant is trained on L1 + LSGAN only.
#
# On a CPU the variants train side by side, one single-thread process per core (`workers`, see
# `stfusion.train.ablation`): these small models gain little from a second thread, so two cores
# train two variants in about the time of one. With CUDA they train one after another.
#
# At the quick tier each variant trains for about a minute of CPU: differences between variants are
# within the run-to-run spread and are **not significant**. The paper tier (`train.tier: paper`, on a
# GPU) is the one to compare with the published tables.

# %% tags=["parameters"]
dataset = "cia-sim"
model = "mcbam-gan"
variants = ["depth-1"]  # the variants to train (the stage passes ablation.variants)
seed = 42
tier = "quick"
settings = None  # {variant: its merged settings} (None: built from params.yaml)
train = {}
workers = None  # worker processes (None: one per core on CPU, none with CUDA; 0: train in this process)
workspace = None

# %%
import pandas as pd

from stfusion.methods.models import get_model_spec
from stfusion.paths import Workspace
from stfusion.train.ablation import VariantRun, default_workers, run_ablation
from stfusion.train.config import project_settings, train_config, variant_settings

ws = Workspace.resolve(workspace)
if settings is None:
    params = project_settings()
    settings = {variant: variant_settings(params, variant, tier) for variant in variants}
encoder = ws.autoencoder(dataset) / "autoencoder.pt" if get_model_spec(model).feature_encoder else None
runs = [VariantRun(model=model, variant=variant, settings=settings[variant], dataset=dataset,
                   out_dir=str(ws.ablation(dataset)), cube=str(ws.cube(dataset)), splits=str(ws.splits(dataset)),
                   checkpoint_dir=str(ws.checkpoints(dataset, f"ablation-{variant}")), seed=seed, tier=tier,
                   feature_encoder=str(encoder) if encoder else None, train=train)
        for variant in variants]
for run in runs:
    config = train_config(run.settings, key=f"ablation.settings.{run.variant}")
    print(f"{run.variant:22s} architecture {config.arch}; loss weights pixel {config.pixel_weight}, feature "
          f"{config.feature_weight}, spectral {config.cosine_weight}, vision {config.msssim_weight}, "
          f"adversarial {config.adversarial_weight}")
print(f"{len(runs)} variants of {model} on {dataset}, tier {tier}; workers: "
      f"{default_workers(runs) if workers is None else workers}")

# %%
records = run_ablation(runs, workers=workers)

# %% [markdown]
# What each variant's run recorded (validation RMSE: the checkpoint selection's score on the validation
# pair; the test scores come from the evaluate stage):

# %%
pd.DataFrame([{"variant": name, "parameters": r["parameters"], "discriminator parameters": r["discriminator_parameters"],
               "train seconds": round(r["train_seconds"], 1), "best epoch": r["best_epoch"],
               "best val RMSE": round(r["best_val_rmse"], 4)} for name, r in records.items()]).set_index("variant")
