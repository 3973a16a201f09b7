"""Spine labelling and rootlet QC figures: what is drawn lands where the anatomy is.

Colours are found by hue: a semi-transparent fill over the grey underlay keeps its hue, and the
grey underlay has none, so a fill's pixels can be told apart from the image and from each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import rgb_to_hsv, to_rgb
from report_phantom import DISCS, SHAPE, ZOOMS_MM, Phantom

from spinal_bidsapp.geometry.discs import spinal_level_name
from spinal_bidsapp.image import Volume, load_mask, load_volume, reorient, vox_to_mm
from spinal_bidsapp.reports import figures, label_figures
from spinal_bidsapp.reports.views import (
    cord_depth,
    make_cord_coronal,
    make_panel,
)

BODY_A = (38, 47)
"""Vertebral bodies: A voxel range (inclusive), anterior of the phantom's canal."""
BODY_R = (12, 28)
"""Vertebral bodies: R voxel range (inclusive), around the cord (R index 20)."""


def _read_png(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(str(path))[..., :3]


def _hue_mask(pixels: np.ndarray, color: str, *, tol_deg: float = 8.0) -> np.ndarray:
    """Pixels of ``color``'s hue, saturated enough not to be the grey underlay or white text."""
    hsv = rgb_to_hsv(np.clip(pixels, 0, 1))
    target = rgb_to_hsv(np.array(to_rgb(color)))[0]
    delta = np.abs(hsv[..., 0] - target)
    delta = np.minimum(delta, 1 - delta) * 360
    return (delta < tol_deg) & (hsv[..., 1] > 0.25) & (hsv[..., 2] > 0.15)


def _panel_boxes(pixels: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(row0, row1, col0, col1), inclusive, of each image panel: runs of grey columns/rows.

    The black margins hold only sparse text and lines; the panels are mostly grey.
    """
    lit = pixels.max(axis=-1) > 0.02
    grey = lit & (pixels.max(axis=-1) - pixels.min(axis=-1) < 0.08)
    boxes = []
    for cols in _runs(np.flatnonzero(lit.mean(axis=0) > 0.5)):
        rows = max(_runs(np.flatnonzero(grey[:, cols[0]:cols[-1] + 1].mean(axis=1) > 0.3)),
                   key=len)
        boxes.append((int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])))
    return boxes


def _runs(indices: np.ndarray) -> list[np.ndarray]:
    """Runs of consecutive indices."""
    return np.split(indices, np.flatnonzero(np.diff(indices) > 1) + 1)


def _vertebrae(*, r_range: tuple[int, int] = BODY_R) -> Volume:
    """Vertebral bodies C2-C5 between the phantom's discs (RAS grid, SCT values 2-5)."""
    data = np.zeros(SHAPE, np.int16)
    for value in (2, 3, 4, 5):
        top = round(DISCS[value] / ZOOMS_MM[2]) - 1  # one slice of disc below disc `value`
        bottom = round(DISCS[value + 1] / ZOOMS_MM[2]) + 1
        data[r_range[0]:r_range[1] + 1, BODY_A[0]:BODY_A[1] + 1, bottom:top + 1] = value
    return Volume(data, np.diag([*ZOOMS_MM, 1.0]))


def _expected_box(value: int, box: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    """Pixel rows/cols (row0, row1, col0, col1) of vertebra ``value`` on the sagittal panel."""
    row0, row1, col0, col1 = box
    height_mm, width_mm = SHAPE[2] * ZOOMS_MM[2], SHAPE[1] * ZOOMS_MM[1]
    px_row = (row1 - row0 + 1) / height_mm
    px_col = (col1 - col0 + 1) / width_mm
    top = round(DISCS[value] / ZOOMS_MM[2]) - 1
    bottom = round(DISCS[value + 1] / ZOOMS_MM[2]) + 1
    # superior up: the top pixel row is the last S slice; anterior on the left: column 0 is the
    # most anterior A index; distances from the top-left corner, mm
    top_mm = (SHAPE[2] - 1 - top) * ZOOMS_MM[2]
    bottom_mm = (SHAPE[2] - bottom) * ZOOMS_MM[2]
    left_mm = (SHAPE[1] - 1 - BODY_A[1]) * ZOOMS_MM[1]
    right_mm = (SHAPE[1] - BODY_A[0]) * ZOOMS_MM[1]
    return (row0 + top_mm * px_row, row0 + bottom_mm * px_row,
            col0 + left_mm * px_col, col0 + right_mm * px_col)


def test_spine_labels_fill_each_vertebra_where_it_is(phantom: Phantom, tmp_path: Path) -> None:
    out = label_figures.plot_spine_labels(phantom.image, tmp_path / "spine.png",
                                    vertebrae=_vertebrae(), discs=phantom.discs,
                                    cord=phantom.mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spine.png"], "temporary file left"
    pixels = _read_png(out)
    [box] = _panel_boxes(pixels)
    row0, row1, col0, col1 = box
    inner = np.zeros(pixels.shape[:2], bool)
    inner[row0 + 3:row1 - 2, col0 + 3:col1 - 2] = True  # leaders start on the panel edge
    for value in (3, 5):  # C3 green, C5 magenta
        color = label_figures.level_color(value, label_figures.VERTEBRA_COLORS)
        drawn = _hue_mask(pixels, color) & inner
        top, bottom, left, right = _expected_box(value, box)
        rows, cols = np.nonzero(drawn)
        assert rows.size > 0.5 * (bottom - top) * (right - left), f"{value}: fill missing"
        assert rows.min() >= top - 2 and rows.max() <= bottom + 2, f"{value}: wrong height"
        assert cols.min() >= left - 2 and cols.max() <= right + 2, f"{value}: not anterior"
        # and named in the right margin, level with the fill
        named = _hue_mask(pixels, color)[:, col1 + 5:]
        name_rows = np.flatnonzero(named.any(axis=1))
        assert name_rows.size > 5, f"{value}: no name in the right margin"
        assert top - 10 <= np.median(name_rows) <= bottom + 10
    disc_names = pixels[:, :col0 - 5].min(axis=-1) > 0.95
    assert disc_names.sum() > 200, "disc names missing from the left margin"


def test_spine_slice_follows_the_vertebrae_without_a_cord(phantom: Phantom,
                                                          tmp_path: Path) -> None:
    # bodies far right of the volume's middle (R index 20): only seen if the slice goes there
    vertebrae = _vertebrae(r_range=(2, 7))
    pixels = _read_png(label_figures.plot_spine_labels(phantom.image, tmp_path / "s.png",
                                                 vertebrae=vertebrae))
    [box] = _panel_boxes(pixels)
    inner = np.zeros(pixels.shape[:2], bool)
    inner[box[0]:box[1], box[2]:box[3]] = True
    green = _hue_mask(pixels, label_figures.level_color(3, label_figures.VERTEBRA_COLORS)) & inner
    assert green.sum() > 300


def test_spine_banner_only_when_flagged(phantom: Phantom, tmp_path: Path) -> None:
    kwargs = {"vertebrae": _vertebrae(), "cord": phantom.mask}
    clean = _read_png(label_figures.plot_spine_labels(phantom.image, tmp_path / "a.png", **kwargs))
    flagged = _read_png(label_figures.plot_spine_labels(
        phantom.image, tmp_path / "b.png", flagged=["missing C4", "discs out of order"],
        **kwargs))

    def banner_rows(pixels: np.ndarray) -> np.ndarray:
        banner = np.abs(pixels - np.array(to_rgb(label_figures.FLAG_COLOR))).max(axis=-1) < 0.05
        return np.flatnonzero(banner.mean(axis=1) > 0.6)

    assert banner_rows(clean).size == 0
    rows = banner_rows(flagged)
    assert rows.size > 20 and rows.min() < 5, "no banner across the top"
    text = flagged[rows.min():rows.max() + 1].min(axis=-1) > 0.9
    assert text.sum() > 100, "banner has no text"
    assert flagged.shape[0] > clean.shape[0] + 20


def test_spine_outlines_cord_and_canal_with_a_legend(phantom: Phantom, tmp_path: Path) -> None:
    ras_mask = reorient(phantom.mask)
    canal = ras_mask.with_data(np.zeros(SHAPE, np.uint8))
    canal.data[14:27, 13:40] = 1
    with_canal = _read_png(label_figures.plot_spine_labels(
        phantom.image, tmp_path / "a.png", vertebrae=_vertebrae(), cord=phantom.mask,
        canal=canal))
    without = _read_png(label_figures.plot_spine_labels(
        phantom.image, tmp_path / "b.png", vertebrae=_vertebrae(), cord=phantom.mask))

    def count(pixels: np.ndarray, color: str) -> int:
        return int((np.abs(pixels - np.array(to_rgb(color))).max(axis=-1) < 0.1).sum())

    assert count(with_canal, label_figures.CANAL_COLOR) > 200
    assert count(without, label_figures.CANAL_COLOR) == 0
    assert count(with_canal, figures.CORD_COLOR) > 200
    [box] = _panel_boxes(with_canal)
    legend = with_canal[box[1] + 5:]
    assert count(legend, figures.CORD_COLOR) > 10 and count(legend, label_figures.CANAL_COLOR) > 10


def test_spine_rejects_labels_on_another_grid(phantom: Phantom, tmp_path: Path) -> None:
    vertebrae = _vertebrae()
    affine = vertebrae.affine.copy()
    affine[:3, 3] += 4.0
    shifted = Volume(vertebrae.data, affine)
    with pytest.raises(ValueError, match="not on the image grid"):
        label_figures.plot_spine_labels(phantom.image, tmp_path / "x.png", vertebrae=shifted)
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(("value", "name"), [(1, "C1"), (8, "C8"), (9, "T1"), (20, "T12"),
                                             (21, "L1"), (0, "level 0"), (99, "level 99")])
def test_spinal_level_names_have_eight_cervical_levels(value: int, name: str) -> None:
    assert spinal_level_name(value) == name


def test_cord_coronal_keeps_a_curved_cord_in_view() -> None:
    shape = (20, 40, 30)
    mask = np.zeros(shape, np.uint8)
    for k in range(shape[2]):
        a = 5 + k  # the cord drifts 29 voxels anteriorly from bottom to top
        mask[8:12, a - 1:a + 2, k] = 1
    volume = Volume(mask.astype(np.float32), np.eye(4))
    curved = make_cord_coronal(volume, Volume(mask, np.eye(4)),
                               depth=cord_depth(Volume(mask, np.eye(4)), shape))
    assert curved.mask is not None and curved.mask.any(axis=1).all()
    assert curved.letters == ("R", "L", "S", "I")
    flat = make_panel(volume, Volume(mask, np.eye(4)), axis=1, index=shape[1] // 2)
    assert flat.mask is not None and flat.mask.any(axis=1).sum() < 5


def test_rootlets_on_real_sct_output_are_coloured_at_their_levels(data_dir: Path,
                                                                 bids_real: Path,
                                                                 tmp_path: Path) -> None:
    image = load_volume(bids_real / "sub-errsm30" / "anat" / "sub-errsm30_T2w.nii.gz")
    reference = data_dir / "sct-reference"
    rootlets = load_mask(reference / "sub-errsm30_T2w_rootlets-deepseg.nii.gz")
    cord = load_mask(reference / "sub-errsm30_T2w_seg-deepseg2d.nii.gz")
    pixels = _read_png(label_figures.plot_rootlets(image, rootlets, tmp_path / "r.png", cord=cord))
    boxes = _panel_boxes(pixels)
    assert len(boxes) == 2, "expected a coronal and a sagittal panel"
    data = np.rint(rootlets.data).astype(int)
    levels = sorted(int(v) for v in np.unique(data[data > 0]))
    assert levels == [3, 4, 5, 6]
    centre_s = {v: float(vox_to_mm(rootlets.affine, np.argwhere(data == v))[:, 2].mean())
                for v in levels}
    for row0, row1, col0, col1 in boxes:
        median_row = {}
        for v in levels:
            color = np.array(to_rgb(label_figures.level_color(v, label_figures.ROOTLET_COLORS)))
            exact = np.abs(pixels[row0:row1 + 1, col0:col1 + 1] - color).max(axis=-1) < 0.02
            assert exact.sum() > 100, f"{spinal_level_name(v)} missing from a panel"
            median_row[v] = float(np.median(np.nonzero(exact)[0]))
        # superior up, and the levels keep their spacing along the cord
        rows = np.array([median_row[v] for v in levels])
        s_mm = np.array([centre_s[v] for v in levels])
        assert np.all(np.diff(rows) > 0), "levels out of order (superior must be up)"
        slope, offset = np.polyfit(s_mm, rows, 1)
        assert slope < 0
        assert np.abs(slope * s_mm + offset - rows).max() < 0.05 * (row1 - row0)


def test_rootlets_figure_survives_an_empty_segmentation(phantom: Phantom, tmp_path: Path) -> None:
    empty = phantom.mask.with_data(np.zeros_like(phantom.mask.data))
    pixels = _read_png(label_figures.plot_rootlets(phantom.image, empty, tmp_path / "e.png",
                                             cord=phantom.mask))
    assert pixels[..., :3].std() > 0.05, "figure looks blank"
    for color in label_figures.ROOTLET_COLORS:
        exact = np.abs(pixels - np.array(to_rgb(color))).max(axis=-1) < 0.02
        assert exact.sum() < 20, f"{color} drawn without any rootlet"
