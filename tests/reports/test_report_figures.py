"""QC figures drawn from the phantom and from real data: files, sizes, aspect, no leftovers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from report_phantom import SHAPE, ZOOMS_MM, Phantom

from spinal_bidsapp.image import Volume, load_mask, load_volume, reorient
from spinal_bidsapp.reports import figures
from spinal_bidsapp.reports.views import BoxMM


def _read_png(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(str(path))


def _assert_not_blank(pixels: np.ndarray) -> None:
    grey = pixels[..., :3].mean(axis=-1)
    assert grey.std() > 0.05, "figure looks blank"


def test_importing_figures_loads_no_matplotlib() -> None:
    code = ("import sys, spinal_bidsapp.reports.figures, spinal_bidsapp.reports.label_figures, "
            "spinal_bidsapp.reports.qc; "
            "print(any(m.startswith('matplotlib') for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_sagittal_keeps_the_physical_aspect(phantom: Phantom, tmp_path: Path) -> None:
    out = figures.plot_sagittal(phantom.image, tmp_path / "sag.png", mask=phantom.mask)
    pixels = _read_png(out)
    _assert_not_blank(pixels)
    height_mm, width_mm = SHAPE[2] * ZOOMS_MM[2], SHAPE[1] * ZOOMS_MM[1]  # 90 x 30 mm
    rows, cols = pixels.shape[:2]
    # the panel fills the figure but for a thin frame; equal voxels would give 0.9
    assert rows / cols == pytest.approx(height_mm / width_mm, rel=0.1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sag.png"], "temporary file left"


def test_sagittal_names_every_disc_in_a_margin(phantom: Phantom, tmp_path: Path) -> None:
    plain = _read_png(figures.plot_sagittal(phantom.image, tmp_path / "a.png"))
    named = _read_png(figures.plot_sagittal(phantom.image, tmp_path / "b.png",
                                            discs=phantom.discs, title="discs"))
    assert named.shape[1] > plain.shape[1] + 50, "no margin for the disc names"
    cyan = (named[..., 0] < 0.3) & (named[..., 1] > 0.7) & (named[..., 2] > 0.8)
    assert cyan.sum() > 5 * 20, "disc markers missing"
    white = named[..., :3].min(axis=-1) > 0.95
    margin = white[:, : named.shape[1] - plain.shape[1]]
    assert margin.sum() > 200, "disc names missing from the margin"


def test_sagittal_draws_the_cord_outline_in_red(phantom: Phantom, tmp_path: Path) -> None:
    with_mask = _read_png(figures.plot_sagittal(phantom.image, tmp_path / "a.png",
                                                mask=phantom.mask))
    without = _read_png(figures.plot_sagittal(phantom.image, tmp_path / "b.png"))

    def red_pixels(p: np.ndarray) -> int:
        return int(((p[..., 0] > 0.8) & (p[..., 1] < 0.4) & (p[..., 2] < 0.4)).sum())

    assert red_pixels(with_mask) > 200
    assert red_pixels(without) == 0


def test_sagittal_crop_box_is_drawn_in_yellow(phantom: Phantom, tmp_path: Path) -> None:
    ras = reorient(phantom.mask)
    box = BoxMM.from_voxel_bounds(ras.affine, (10, 10, 5), (30, 40, 40))
    pixels = _read_png(figures.plot_sagittal(phantom.image, tmp_path / "box.png", crop_box=box))
    yellow = (pixels[..., 0] > 0.8) & (pixels[..., 1] > 0.7) & (pixels[..., 2] < 0.3)
    assert yellow.sum() > 100


def test_sagittal_rejects_a_mask_on_another_grid(phantom: Phantom, tmp_path: Path) -> None:
    affine = phantom.mask.affine.copy()
    affine[:3, 3] += 5.0
    shifted = Volume(phantom.mask.data, affine)
    with pytest.raises(ValueError, match="not on the image grid"):
        figures.plot_sagittal(phantom.image, tmp_path / "x.png", mask=shifted)
    assert not (tmp_path / "x.png").exists()


def test_axial_montage_tiles_every_chosen_slice(phantom: Phantom, tmp_path: Path) -> None:
    out = figures.plot_axial_montage(phantom.image, phantom.mask, tmp_path / "ax.png", count=8,
                                     columns=4)
    pixels = _read_png(out)
    _assert_not_blank(pixels)
    rows, cols = pixels.shape[:2]
    assert cols / rows == pytest.approx(2.0, rel=0.05)  # 4 x 2 square tiles
    empty = phantom.mask.with_data(np.zeros_like(phantom.mask.data))
    with pytest.raises(ValueError, match="empty"):
        figures.plot_axial_montage(phantom.image, empty, tmp_path / "none.png")


def test_registration_composite_and_flicker_frames(phantom: Phantom, tmp_path: Path) -> None:
    composite = figures.plot_registration(
        phantom.image, phantom.template, tmp_path / "reg.png", fixed_mask=phantom.mask,
        moving_mask=phantom.template_mask, names=("subject", "PAM50"))
    with_axial = _read_png(composite)
    _assert_not_blank(with_axial)
    sagittal_only = _read_png(figures.plot_registration(
        phantom.image, phantom.template, tmp_path / "reg0.png", fixed_mask=phantom.mask,
        moving_mask=phantom.template_mask, axial_count=0))
    assert with_axial.shape[1] == sagittal_only.shape[1]
    assert with_axial.shape[0] > sagittal_only.shape[0] + 100, "axial row missing"
    first, second = figures.plot_flicker_frames(
        phantom.image, phantom.template, tmp_path / "f1.png", tmp_path / "f2.png",
        fixed_mask=phantom.mask, moving_mask=phantom.template_mask)
    a, b = _read_png(first), _read_png(second)
    assert a.shape == b.shape, "flicker frames must be pixel-aligned"
    assert np.abs(a - b).mean() > 0.005, "frames must differ (different underlays)"


def test_registration_needs_one_grid(phantom: Phantom, tmp_path: Path) -> None:
    cropped = Volume(phantom.template.data[:-2], phantom.template.affine)
    with pytest.raises(ValueError, match="one grid"):
        figures.plot_registration(phantom.image, cropped, tmp_path / "reg.png")


def test_csa_plot_with_vertebral_bands(tmp_path: Path) -> None:
    position = np.linspace(0, 90, 46)
    csa = 70 + 5 * np.sin(position / 10)
    csa[10:12] = np.nan
    out = figures.plot_csa(position, csa, tmp_path / "csa.png",
                           discs=[(2, 80.0), (3, 65.0), (4, 50.0), (50, 95.0)], title="CSA")
    _assert_not_blank(_read_png(out))
    with pytest.raises(ValueError):
        figures.plot_csa(position, csa[:-1], tmp_path / "bad.png")


def test_real_subject_figures(bids_real: Path, tmp_path: Path) -> None:
    """sub-errsm30 (stored P S R, 1 mm): sagittal with discs and crop, montage, in seconds."""
    anat = bids_real / "sub-errsm30" / "anat" / "sub-errsm30_T2w.nii.gz"
    labels = bids_real / "derivatives" / "labels" / "sub-errsm30" / "anat"
    image = load_volume(anat)
    mask = load_mask(labels / "sub-errsm30_T2w_label-SC_mask.nii.gz", reference=image)
    discs = load_mask(labels / "sub-errsm30_T2w_labels-disc.nii.gz", reference=image)
    ijk = np.argwhere(mask.data > 0)
    box = BoxMM.from_voxel_bounds(image.affine, ijk.min(0) - 5, ijk.max(0) + 6)
    sag = figures.plot_sagittal(image, tmp_path / "sag.png", mask=mask, discs=discs,
                                crop_box=box)
    montage = figures.plot_axial_montage(image, mask, tmp_path / "ax.png")
    for path in (sag, montage):
        _assert_not_blank(_read_png(path))
