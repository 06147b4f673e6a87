"""Training of the deep models on Lightning: settings, data module, tasks, the fit loop and runs.

- :mod:`stfusion.train.config`: one tier of one model in params.yaml, validated (TrainConfig).
- :mod:`stfusion.train.datamodule`: patches of training pairs and fixed validation patches.
- :mod:`stfusion.train.losses`: the pixel, MS-SSIM, feature, cosine and LSGAN losses.
- :mod:`stfusion.train.tasks`: one LightningModule per objective (regression, adversarial, autoencoder).
- :mod:`stfusion.train.fit`: ``train_model``, seeds, checkpoints, resume, logs, devices.
- :mod:`stfusion.train.run`: train and predict a method; train the feature autoencoder.
- :mod:`stfusion.train.ablation`: the ablation's variants side by side.
"""
