"""Every fusion method: baselines that need no training, deep models, and the registry of both.

The registry (:mod:`stfusion.methods.registry`) names each method's code by module path and imports
it on first use, so importing one method never imports the others.
"""
