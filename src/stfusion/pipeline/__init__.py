"""The DVC pipeline: params.yaml validation, the stage runner, the code each stage depends on, and
``stfusion study``."""
