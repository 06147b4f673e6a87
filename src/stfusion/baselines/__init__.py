"""Methods that need no training: the reference predictors (and, later, STARFM and FSDAF)."""
