"""The data layer: raw files -> manifest -> datacube -> split manifest -> patches.

- :mod:`~stfusion.data.synthetic`: the CIA-like and LGC-like scene generator.
- :mod:`~stfusion.data.real`, :mod:`~stfusion.data.envi`: the real CIA/LGC files and their download.
- :mod:`~stfusion.data.sources`: one entry point for both (the download stage).
- :mod:`~stfusion.data.manifest`, :mod:`~stfusion.data.raster`: checked file lists and raster I/O.
- :mod:`~stfusion.data.datacube`, :mod:`~stfusion.data.splits`, :mod:`~stfusion.data.preprocess`:
  the preprocess stage.
- :mod:`~stfusion.data.samplers`: random training patches.
"""
