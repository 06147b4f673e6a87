# %% [markdown]
# # 5 · Ablation: the MCBAM-GAN paper's Tables 2 to 4
#
# One run of this notebook trains one ablation variant of MCBAM-GAN on one dataset (DVC runs it for
# every dataset × variant) and predicts every test pair, exactly as the train stage does for a method.
# A variant is the model's settings at the study's scale with the overrides of
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
# At the quick scale each variant trains for a few minutes of CPU: differences between variants are
# within the run-to-run spread and are **not significant**. The paper scale (`train.scale: paper`, on a
# GPU) is the one to compare with the published tables.

# %% tags=["parameters"]
dataset = "cia-sim"
variant = "depth-1"
model = "mcbam-gan"
seed = 42
scale = "quick"
settings = None  # the variant's merged settings (None: built from params.yaml)
train = {}
workspace = None

# %%
from stfusion.config import load_params
from stfusion.data.datacube import open_cube
from stfusion.data.splits import Splits
from stfusion.models import get_model_spec
from stfusion.paths import Workspace
from stfusion.train.config import train_config, variant_settings
from stfusion.train.run import run_method

ws = Workspace.resolve(workspace)
cube = open_cube(ws.cube(dataset))
split = Splits.load(ws.splits(dataset))
if settings is None:
    settings = variant_settings(load_params(), variant, scale)
config = train_config(settings, key=f"ablation.settings.{variant}")
print(f"{model} variant {variant}, scale {scale}: architecture {config.arch}; loss weights pixel "
      f"{config.pixel_weight}, feature {config.feature_weight}, spectral {config.cosine_weight}, "
      f"vision {config.msssim_weight}, adversarial {config.adversarial_weight}")

# %%
encoder = ws.autoencoder(dataset) / "autoencoder.pt" if get_model_spec(model).feature_encoder else None
record = run_method(model, cube, split, ws.ablation(dataset) / variant, seed=seed, config=config, scale=scale,
                    checkpoint_dir=ws.checkpoints(dataset, f"ablation-{variant}"), feature_encoder_path=encoder,
                    train_options=train, extra={"variant": variant})
{k: record.get(k) for k in ("variant", "parameters", "discriminator_parameters", "train_seconds", "best_epoch",
                            "best_val_rmse", "predict_seconds")}
