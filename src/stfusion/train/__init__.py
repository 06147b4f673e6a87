"""Training of the deep models on Lightning: settings, data module, tasks, the fit loop and runs.

- :mod:`stfusion.train.config`: one scale of one model in params.yaml, validated (TrainConfig).
- :mod:`stfusion.train.datamodule`: patches of training pairs and fixed validation patches.
- :mod:`stfusion.train.tasks`: one LightningModule per objective (regression, adversarial, autoencoder).
- :mod:`stfusion.train.fit`: ``train_model``, seeds, checkpoints, resume, logs, devices.
- :mod:`stfusion.train.weights`: exported weights, loaded strictly and with ``weights_only=True``.
- :mod:`stfusion.train.run`: train and predict a method; train the feature autoencoder.
"""

from stfusion.train.config import SCALES, TrainConfig, resolve_settings, scale_settings, train_config

__all__ = ["SCALES", "TrainConfig", "resolve_settings", "scale_settings", "train_config"]
