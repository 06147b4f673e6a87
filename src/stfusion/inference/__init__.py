"""From a method (or trained weights) and input images to predictions: tiled full-scene inference,
sampling of stochastic models, weights files, predictions of a split and ``stfusion fuse``.

Nothing here imports Lightning: a trained model predicts without its training code.
"""
