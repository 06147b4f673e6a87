"""The rehearsal's mock portal: the real datasets' files in their real formats, served on 127.0.0.1,
downloaded by the real download code (here at a cropped size; the rehearsal runs it at full size)."""

from __future__ import annotations

import warnings
import zipfile

import numpy as np
import pytest

from stfusion.data.envi import NoGeoreferenceWarning, read_envi
from stfusion.data.real import CIA, LGC, DownloadError, download
from stfusion.rehearsal.portal import FILL_MODIS, PortalServer, coarse_image, fine_image, with_fill, write_collection

CROP = (6, 400, 360)  # big enough that a transfer cut at 3.5 MB has whole 1 MiB chunks to resume from


def read_raw(manifest, date: str, role: str) -> np.ndarray:
    info = manifest.file_info(next(e[role] for e in manifest.dates if e["date"] == date))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoGeoreferenceWarning)
        return read_envi(manifest.file(date, role), interleave=info["format"][5:], shape=tuple(info["shape"])).data


@pytest.fixture(scope="module")
def cia(tmp_path_factory):
    spec = CIA.restrict(dates=["2001-10-08", "2001-10-17", "2002-03-10"], shape=CROP)
    return spec, write_collection(spec, tmp_path_factory.mktemp("portal") / "cia", seed=3, progress=False)


def test_the_portal_delivers_cia_as_one_zip_with_the_real_layout_and_names(cia):
    spec, folder = cia
    (archive,) = folder.glob("*.zip")
    assert archive.name.startswith("Landsat_and_MODIS_data_for_the_Coleambally_Irrigation_Area-")
    names = zipfile.ZipFile(archive).namelist()
    assert all("/data/CIA/Landsat/" in n or "/data/CIA/MODIS/" in n for n in names)
    assert any(n.endswith("/2001_281_08oct/L71093084_08420011007_HRF_modtran_surf_ref_agd66.bil") for n in names)
    assert any("/2002_069_10mar/L72093084_08420020309" in n for n in names)  # the L72 file, a day early
    headers = [n for n in names if n.endswith(".hdr")]
    assert headers and len(headers) < len(names) / 2  # some dates with headers, some without


def test_a_transfer_cut_halfway_is_resumed_and_the_files_read_back_exactly(cia, tmp_path):
    spec, folder = cia
    with PortalServer({spec.dap_id: folder}) as portal:
        listed = [e["filename"] for e in portal.listing(spec.dap_id)["file"]]
        archive = next(n for n in listed if n.endswith(".zip"))
        portal.interrupt = {archive: 3_500_000}
        manifest = download(spec, tmp_path / "raw", base_url=portal.base_url)
    ranges = [r for path, r in portal.log if path.startswith("/s3/")]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and int(ranges[1][6:-1]) >= 1 << 20
    assert "README.pdf" not in manifest.meta["downloads"] and manifest.meta["licence"]
    assert manifest.date_list() == spec.dates()
    for index, date in enumerate(spec.dates()):
        fine = with_fill(fine_image(spec, index, 3), index, "fine")
        np.testing.assert_array_equal(read_raw(manifest, date, "fine"), fine)
        np.testing.assert_array_equal(read_raw(manifest, date, "coarse"),
                                      with_fill(coarse_image(fine_image(spec, index, 3)), index, "coarse"))
    assert (read_raw(manifest, "2001-10-17", "coarse") == FILL_MODIS).any()


def test_lgc_comes_as_a_landsat_zip_and_a_modis_zip(tmp_path):
    spec = LGC.restrict(dates=["2004-04-16", "2004-12-12"], shape=(6, 60, 80))
    folder = write_collection(spec, tmp_path / "lgc", progress=False)
    assert sorted(p.name.split("-")[0] for p in folder.glob("*.zip")) == [
        "Landsat_and_MODIS_data_for_the_Lower_Gwydir_Catchment_LANDSAT",
        "Landsat_and_MODIS_data_for_the_Lower_Gwydir_Catchment_MODIS"]
    with PortalServer({spec.dap_id: folder}) as portal:
        manifest = download(spec, tmp_path / "raw", base_url=portal.base_url)
    assert manifest.date_list() == spec.dates()
    assert manifest.files[manifest.dates[1]["fine"]]["format"] == "envi-bsq"


def test_a_connection_that_keeps_dropping_is_a_one_line_error_and_keeps_what_arrived(cia, tmp_path, monkeypatch):
    spec, folder = cia
    monkeypatch.setattr("stfusion.data.real.RETRIES", 1)  # two tries of 1.2 MB each cannot bring 4 MB
    with PortalServer({spec.dap_id: folder}, drop_every=1_200_000) as portal:
        with pytest.raises(DownloadError, match="running it again resumes what arrived"):
            download(spec, tmp_path / "raw", base_url=portal.base_url)
    (part,) = (tmp_path / "raw" / "downloads").glob("*.zip.part")
    assert part.stat().st_size == 2 << 20  # whole 1 MiB chunks of both tries


def test_a_cropped_rehearsal_takes_the_portal_files_to_a_paper_tier_prediction(tmp_path):
    """The rehearsal's path at a cropped size: portal, download, cube, a paper-tier model, tiled inference."""
    from stfusion.data.preprocess import preprocess_dataset
    from stfusion.data.raster import read_geotiff
    from stfusion.inference.predict import prediction_name
    from stfusion.paths import find_root
    from stfusion.pipeline.profiles import profile_params
    from stfusion.train.config import train_config
    from stfusion.train.run import run_method
    from stfusion.units import to_reflectance

    spec = CIA.restrict(dates=["2001-10-08", "2001-10-17", "2001-11-02", "2001-11-09", "2001-11-25"], shape=(6, 280, 260))
    folder = write_collection(spec, tmp_path / "portal", seed=5, progress=False)
    with PortalServer({spec.dap_id: folder}) as portal:
        download(spec, tmp_path / "raw", base_url=portal.base_url)
    cube, split = preprocess_dataset(tmp_path / "raw", tmp_path / "processed",
                                     {"test_targets": ["2001-11-09"], "val_targets": ["2001-11-02"]})
    assert cube["fine"].shape == (5, 6, 280, 260) and list(split.test) == [("2001-11-02", "2001-11-09")]
    assert not cube["valid"].values[1].all()  # 2001-10-17's MODIS fill value is masked
    # The rehearsal's DCSTFN: the paper's architecture, patch and tile, two steps (two patches each here).
    settings = {**profile_params(find_root(), "rehearsal")["models"]["dcstfn"]["paper"], "batch_size": 2}
    config = train_config(settings, key="models.dcstfn.paper")
    record = run_method("dcstfn", cube, split, tmp_path / "dcstfn", seed=42, config=config, tier="paper",
                        checkpoint_dir=tmp_path / "checkpoints", train_options={"threads": None})
    assert record["parameters"] > 500_000 and record["tier"] == "paper" and record["tile"] == config.tile
    prediction = read_geotiff(tmp_path / "dcstfn" / prediction_name(split.test[0])).data
    observed = to_reflectance(cube["fine"].sel(time="2001-11-09").values)
    assert prediction.shape == observed.shape and np.isfinite(prediction).all()
    assert 0 < np.sqrt(np.mean((prediction - observed) ** 2)) < 1


def test_a_stage_is_measured_by_its_own_memory_not_the_rehearsals(tmp_path):
    import os
    import sys

    from stfusion.rehearsal.run import append_row, markdown, measure

    ballast = np.ones(300 * 2 ** 20 // 8)  # this process holds 300 MiB; the stage must not inherit it
    grow = "import numpy as np; a = np.ones(200 * 2 ** 20 // 8); a += 1"
    ran = measure([sys.executable, "-c", grow], tmp_path, dict(os.environ), "grow")
    failed = measure([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, dict(os.environ), "fail")
    assert ran.status == "ran" and 0.19 < ran.peak_rss_gib < 0.29 and ran.peak_tree_rss_gib >= ran.peak_rss_gib
    assert failed.status == "failed" and failed.peak_rss_gib < 0.1 and ballast.sum() > 0
    table = tmp_path / "rehearsal.csv"
    append_row(table, ran)
    append_row(table, failed)
    text = markdown(table)
    assert "| grow | ran |" in text and "| fail | failed |" in text and "2 stages" in text


def test_ctrl_c_stops_the_stage_and_the_launcher_prints_no_traceback(tmp_path):
    """Ctrl-C in a terminal reaches every process of the group: the launcher that measures a stage printed a
    KeyboardInterrupt traceback under the stage's own one-line message."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from stfusion.rehearsal.run import LAUNCHER

    report = tmp_path / "usage.json"
    stage = "import time\ntry:\n    time.sleep(30)\nexcept KeyboardInterrupt:\n    raise SystemExit(130)"
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(report), sys.executable, "-c", stage],
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(1.5)
    os.killpg(launcher.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = launcher.communicate(timeout=30)
    assert launcher.returncode == 130 and "Traceback" not in err, err
    assert json.loads(report.read_text())[0] == 130
