"""The data layer: raw files -> manifest -> datacube -> split manifest -> patches.

- :mod:`~stfusion.data.datasets`: the registry of datasets the study knows.
- :mod:`~stfusion.data.synthetic`: the CIA-like and LGC-like scene generator;
  :mod:`~stfusion.data.coarse_sensor` and :mod:`~stfusion.data.clouds` are its coarse sensor and its sky.
- :mod:`~stfusion.data.real`, :mod:`~stfusion.data.envi`: the real CIA/LGC files and their download.
- :mod:`~stfusion.data.sources`: one entry point for both (the download stage).
- :mod:`~stfusion.data.manifest`, :mod:`~stfusion.data.raster`, :mod:`~stfusion.data.formats`: checked
  file lists and raster I/O (any GDAL format a user gives).
- :mod:`~stfusion.data.datacube`, :mod:`~stfusion.data.splits`, :mod:`~stfusion.data.preprocess`:
  the preprocess stage.
- :mod:`~stfusion.data.coarse_pixel`: what a coarse pixel is (one definition for the whole study).
- :mod:`~stfusion.data.gaps`: filling the fine reference's gaps (clouds, nodata) from the coarse one.
- :mod:`~stfusion.data.samplers`: random training patches.
- :mod:`~stfusion.data.statistics`: how a scene's variance splits in space and time, its semivariogram.
- :mod:`~stfusion.data.images`: colour composites, NDVI and difference maps for display.
"""
