"""QC figures drawn with matplotlib and saved atomically as PNG.

Functions take :class:`~spinal_bidsapp.image.Volume` objects (any storage orientation; they are
reoriented to RAS here) and an output path chosen by the caller, and return that path. The
geometry (slices, crops, outlines) comes from :mod:`spinal_bidsapp.reports.views`; this module
only draws. matplotlib is imported inside the functions and drives an Agg canvas directly,
so importing this module has no side effects and never touches pyplot's global state.

Orientation on every figure: superior up; sagittal views show anterior on the left; axial views
show anterior up and patient right on the left. Edge letters say so on each panel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.image import Volume, reorient, same_grid, vox_to_mm
from spinal_bidsapp.reports.views import (
    BoxMM,
    Panel,
    axial_crop,
    checkerboard,
    choose_axial_slices,
    find_disc_points,
    intensity_window,
    make_panel,
    midcord_index,
    normalize,
    outline_segments,
    spread_labels,
    vertebra_bands,
)
from spinal_bidsapp.runtime.files import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

DPI = 110
CORD_COLOR = "#ff3b30"
"""Subject cord outline (red)."""
TEMPLATE_COLOR = "#00d5ff"
"""Template cord outline and disc markers (cyan)."""
BOX_COLOR = "#ffd60a"
"""Crop box (yellow, dashed)."""
PANEL_BOX_IN = (6.0, 9.0)
"""Largest (width, height), inches, of a single sagittal panel."""
DISC_MARGIN_IN = 0.9
"""Left margin, inches, holding the disc names of a sagittal view."""


def new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, facecolor="black")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out: Path) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, facecolor=fig.get_facecolor())
    logger.debug("wrote %s", out)
    return out


def panel_scale(panels_wide: int, width_mm: float, height_mm: float) -> float:
    """Inches per mm so ``panels_wide`` panels fit the size budget.

    One panel may be ``PANEL_BOX_IN`` wide; a row of several shares twice that width.
    """
    max_w, max_h = PANEL_BOX_IN
    row_w = max_w if panels_wide == 1 else 2 * max_w
    return min(row_w / (panels_wide * width_mm), max_h / height_mm)


def _scale_bar_mm(width_mm: float) -> float:
    """Longest round length up to 35 % of the panel width.

    >>> _scale_bar_mm(20.0), _scale_bar_mm(30.0), _scale_bar_mm(60.0), _scale_bar_mm(400.0)
    (5.0, 10.0, 20.0, 100.0)
    """
    return max([1.0] + [b for b in (2.0, 5.0, 10.0, 20.0, 50.0, 100.0) if b <= 0.35 * width_mm])


def draw_panel(ax: Axes, panel: Panel, window: tuple[float, float], *,
                image: NDArray | None = None, letters: bool = True) -> None:
    """Grey image with true aspect, orientation letters, a scale bar and no ticks."""
    from matplotlib import patheffects

    shown = normalize(panel.image if image is None else image, window)
    ax.imshow(shown, cmap="gray", vmin=0.0, vmax=1.0, extent=panel.extent, origin="upper",
              interpolation="nearest", aspect="equal")
    ax.set_xlim(panel.extent[0], panel.extent[1])
    ax.set_ylim(panel.extent[2], panel.extent[3])
    ax.set_axis_off()
    stroke = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    left, right, bottom, top = panel.extent
    if letters:
        pos = [(left, (bottom + top) / 2, "left", "center"),
               (right, (bottom + top) / 2, "right", "center"),
               ((left + right) / 2, top, "center", "top"),
               ((left + right) / 2, bottom, "center", "bottom")]
        for letter, (x, y, ha, va) in zip(panel.letters, pos, strict=True):
            ax.text(x, y, f" {letter} ", color="white", ha=ha, va=va, fontsize=11,
                    fontweight="bold", path_effects=stroke)
    bar_mm = _scale_bar_mm(right - left)
    x0, y0 = left + 0.04 * (right - left), bottom + 0.03 * (top - bottom)
    ax.plot([x0, x0 + bar_mm], [y0, y0], color="white", linewidth=2.5, solid_capstyle="butt",
            path_effects=stroke)
    ax.text(x0 + bar_mm / 2, y0, f"{bar_mm:g} mm", color="white", ha="center", va="bottom",
            fontsize=8, path_effects=stroke)


def draw_outline(ax: Axes, mask: NDArray[np.bool_] | None, panel: Panel, color: str) -> None:
    from matplotlib.collections import LineCollection

    if mask is None or not mask.any():
        return
    segments = outline_segments(mask, panel.pixel_mm)
    ax.add_collection(LineCollection(list(segments), colors=color, linewidths=1.2))


def _title(fig: Figure, title: str | None) -> None:
    if title:
        fig.suptitle(title, color="white", fontsize=11, y=0.995, va="top")


def plot_sagittal(image: Volume, out: Path, *, mask: Volume | None = None,
                  discs: Volume | None = None, crop_box: BoxMM | None = None,
                  title: str | None = None) -> Path:
    """Mid-cord sagittal slice with the cord outline, disc labels and crop box.

    Parameters
    ----------
    image
        Anatomical image, any orientation.
    out
        PNG path, written atomically.
    mask
        Cord mask on the image grid; its outline is drawn in red and it picks the slice (median
        R index of the cord), otherwise the middle slice is shown.
    discs
        Disc label image on the image grid (SCT values); each label is marked and named
        (``C2/C3`` ...). Labels off the displayed slice are projected onto it.
    crop_box
        World box (RAS mm) drawn as a dashed yellow rectangle, e.g. the crop used downstream.
    title
        Text above the panel.
    """
    ras = reorient(image)
    ras_mask = on_grid(mask, ras, "mask")
    ras_discs = on_grid(discs, ras, "disc labels")
    index = midcord_index(ras_mask, ras.shape)
    panel = make_panel(ras, ras_mask, axis=0, index=index)
    width_mm, height_mm = panel.extent[1], panel.extent[3]
    margin_in = DISC_MARGIN_IN if ras_discs is not None else 0.0
    scale = panel_scale(1, width_mm, height_mm)
    head_in = 0.3 if title else 0.0
    fig = new_figure(width_mm * scale + margin_in + 0.2, height_mm * scale + head_in + 0.2)
    fig_w, fig_h = fig.get_figwidth(), fig.get_figheight()
    ax = fig.add_axes((0.1 / fig_w, 0.1 / fig_h, 1 - 0.2 / fig_w, 1 - (0.2 + head_in) / fig_h))
    draw_panel(ax, panel, intensity_window(panel.image))
    draw_outline(ax, panel.mask, panel, CORD_COLOR)
    if crop_box is not None:
        _draw_box(ax, panel.box_to_rect(crop_box, ras.affine))
    if ras_discs is not None:
        ax.set_xlim(-margin_in / scale, width_mm)
        draw_discs(ax, panel, ras_discs, mm_per_in=1 / scale)
    _title(fig, title)
    return save_figure(fig, out)


def on_grid(label: Volume | None, ras: Volume, what: str) -> Volume | None:
    if label is None:
        return None
    ras_label = reorient(label)
    if not same_grid(ras_label, ras):
        raise ValueError(f"{what} is not on the image grid ({label.shape} vs image); resample it")
    return ras_label


def _draw_box(ax: Axes, rect: tuple[float, float, float, float]) -> None:
    from matplotlib.patches import Rectangle

    x, y, w, h = rect
    ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=BOX_COLOR, linewidth=1.5,
                           linestyle="--"))


def draw_discs(ax: Axes, panel: Panel, discs: Volume, *, mm_per_in: float) -> None:
    """Disc markers on the panel; names in the left margin (x < 0) with leaders."""
    from matplotlib import patheffects

    points = find_disc_points(discs)
    if not points:
        return
    stroke = [patheffects.withStroke(linewidth=3, foreground="black")]
    xy = panel.vox_to_xy(np.array([p.ijk for p in points]))
    label_y = spread_labels(xy[:, 1], min_gap=0.17 * mm_per_in, lower=panel.extent[2])
    x_text = -0.08 * mm_per_in
    for point, (x, y), y_text in zip(points, xy, label_y, strict=True):
        # the leader stops at the panel edge so it never hides the disc being checked
        ax.plot([x_text, 0.0], [y_text, y], color=TEMPLATE_COLOR, linewidth=0.8, clip_on=False)
        ax.plot([x], [y], marker="o", markersize=5, color=TEMPLATE_COLOR,
                markeredgecolor="black", markeredgewidth=1.0)
        ax.text(x_text, y_text, point.name, color="white", fontsize=10, fontweight="bold",
                ha="right", va="center", path_effects=stroke, clip_on=False)


def plot_axial_montage(image: Volume, mask: Volume, out: Path, *, count: int = 12,
                       half_width_mm: float = 15.0, columns: int = 6,
                       title: str | None = None) -> Path:
    """Montage of ``count`` axial slices spread along the cord, cropped around it, outlined.

    Tiles run superior to inferior, left to right then top to bottom; each is labelled with its
    superior (S) world coordinate. One intensity window is shared by all tiles.
    """
    ras = reorient(image)
    ras_mask = on_grid(mask, ras, "mask")
    assert ras_mask is not None
    slices = choose_axial_slices(ras_mask, count)
    if not slices:
        raise ValueError("the cord mask is empty; nothing to show in an axial montage")
    panels = []
    for k in slices:
        rows, cols = axial_crop(ras_mask, k, half_width_mm=half_width_mm)
        panels.append(make_panel(ras, ras_mask, axis=2, index=k, row_range=rows, col_range=cols))
    window = intensity_window(np.concatenate([p.image.ravel() for p in panels]))
    ncols = min(columns, len(panels))
    nrows = -(-len(panels) // ncols)
    tile_in = 1.8
    fig = new_figure(ncols * tile_in, nrows * tile_in + (0.35 if title else 0.0))
    top = 1.0 - (0.35 / fig.get_figheight() if title else 0.0)
    for n, (k, panel) in enumerate(zip(slices, panels, strict=True)):
        r, c = divmod(n, ncols)
        gap_x, gap_y = 0.02 / fig.get_figwidth(), 0.02 / fig.get_figheight()
        ax = fig.add_axes((c / ncols + gap_x, top - (r + 1) * top / nrows + gap_y,
                           1 / ncols - 2 * gap_x, top / nrows - 2 * gap_y))
        draw_panel(ax, panel, window, letters=n == 0)
        draw_outline(ax, panel.mask, panel, CORD_COLOR)
        centre = np.array([[ras.shape[0] / 2, ras.shape[1] / 2, k]])
        s_mm = vox_to_mm(ras.affine, centre)[0, 2]
        ax.text(0.97, 0.97, f"S {s_mm:+.0f} mm", transform=ax.transAxes, color="yellow",
                ha="right", va="top", fontsize=8)
    _title(fig, title)
    return save_figure(fig, out)


@dataclass(frozen=True)
class _RegistrationViews:
    """Both images (and masks) in RAS on one grid, plus their mid-cord sagittal panels."""

    fixed: Volume
    fixed_mask: Volume | None
    moving_mask: Volume | None
    sagittal_fixed: Panel
    sagittal_moving: Panel


def _registration_views(fixed: Volume, moving: Volume, fixed_mask: Volume | None,
                        moving_mask: Volume | None) -> _RegistrationViews:
    ras_fixed = reorient(fixed)
    ras_moving = reorient(moving)
    if not same_grid(ras_fixed, ras_moving):
        raise ValueError(
            f"registration overlay needs both images on one grid (shapes {fixed.shape} and "
            f"{moving.shape}); warp the template to the subject (or the subject to the template)"
        )
    ras_fixed_mask = on_grid(fixed_mask, ras_fixed, "fixed mask")
    ras_moving_mask = on_grid(moving_mask, ras_fixed, "moving mask")
    index = midcord_index(ras_fixed_mask if ras_fixed_mask is not None else ras_moving_mask,
                          ras_fixed.shape)
    return _RegistrationViews(
        fixed=ras_fixed, fixed_mask=ras_fixed_mask, moving_mask=ras_moving_mask,
        sagittal_fixed=make_panel(ras_fixed, ras_fixed_mask, axis=0, index=index),
        sagittal_moving=make_panel(ras_moving, ras_moving_mask, axis=0, index=index),
    )


def _draw_both_outlines(ax: Axes, panel: Panel, fixed_outline: NDArray | None,
                        moving_outline: NDArray | None) -> None:
    draw_outline(ax, fixed_outline, panel, CORD_COLOR)
    draw_outline(ax, moving_outline, panel, TEMPLATE_COLOR)


def _draw_axial_outlines(fig: Figure, views: _RegistrationViews, count: int,
                         row: tuple[float, float], *, half_width_mm: float = 12.0) -> None:
    """A row of axial tiles of the fixed image with both cord outlines (figure fractions)."""
    guide = views.fixed_mask if views.fixed_mask is not None else views.moving_mask
    if guide is None or count < 1:
        return
    slices = choose_axial_slices(guide, count)
    if not slices:
        return
    bottom, height = row
    width = 1.0 / len(slices)
    for n, k in enumerate(slices):
        rows, cols = axial_crop(guide, k, half_width_mm=half_width_mm)
        panel = make_panel(views.fixed, views.fixed_mask, axis=2, index=k, row_range=rows,
                           col_range=cols)
        moving = make_panel(views.fixed, views.moving_mask, axis=2, index=k, row_range=rows,
                            col_range=cols).mask
        ax = fig.add_axes((n * width + 0.003, bottom, width - 0.006, height))
        draw_panel(ax, panel, intensity_window(panel.image), letters=n == 0)
        _draw_both_outlines(ax, panel, panel.mask, moving)
        s_mm = vox_to_mm(views.fixed.affine, np.array([[0.0, 0.0, k]]))[0, 2]
        ax.text(0.97, 0.97, f"S {s_mm:+.0f} mm", transform=ax.transAxes, color="yellow",
                ha="right", va="top", fontsize=8)


def plot_registration(fixed: Volume, moving: Volume, out: Path, *,
                      fixed_mask: Volume | None = None, moving_mask: Volume | None = None,
                      names: tuple[str, str] = ("subject", "template"), axial_count: int = 4,
                      title: str | None = None) -> Path:
    """Side by side: fixed image, moving image resampled on it, and their checkerboard.

    ``fixed`` and ``moving`` must share a grid: the template warped to subject space (or the
    subject warped to template space). Both cord outlines (fixed red, moving cyan) are drawn on
    every panel so misalignment shows as a gap between the two lines. When a mask is given, a
    second row shows ``axial_count`` axial slices of the fixed image with both outlines.
    """
    views = _registration_views(fixed, moving, fixed_mask, moving_mask)
    panel_fixed, panel_moving = views.sagittal_fixed, views.sagittal_moving
    window_fixed = intensity_window(panel_fixed.image)
    window_moving = intensity_window(panel_moving.image)
    board = checkerboard(normalize(panel_fixed.image, window_fixed),
                         normalize(panel_moving.image, window_moving))
    width_mm, height_mm = panel_fixed.extent[1], panel_fixed.extent[3]
    scale = panel_scale(3, width_mm, height_mm)
    head_in = 0.3 + (0.3 if title else 0.0)
    sagittal_in = height_mm * scale
    has_axial = axial_count > 0 and (views.fixed_mask is not None
                                     or views.moving_mask is not None)
    axial_in = 3 * width_mm * scale / max(axial_count, 1) if has_axial else 0.0
    fig = new_figure(3 * width_mm * scale + 0.3, sagittal_in + axial_in + head_in + 0.15)
    fig_h = fig.get_figheight()
    sagittal_bottom = (axial_in + 0.1) / fig_h
    captions = (names[0], f"{names[1]} (on {names[0]} grid)", "checkerboard")
    for n, caption in enumerate(captions):
        ax = fig.add_axes((n / 3 + 0.005, sagittal_bottom, 1 / 3 - 0.01, sagittal_in / fig_h))
        if n == 0:
            draw_panel(ax, panel_fixed, window_fixed)
        elif n == 1:
            draw_panel(ax, panel_moving, window_moving)
        else:
            draw_panel(ax, panel_fixed, (0.0, 1.0), image=board)
        _draw_both_outlines(ax, panel_fixed, panel_fixed.mask, panel_moving.mask)
        ax.set_title(caption, color="white", fontsize=10)
    if has_axial:
        _draw_axial_outlines(fig, views, axial_count, (0.05 / fig_h, axial_in / fig_h))
    _title(fig, title)
    return save_figure(fig, out)


def plot_flicker_frames(fixed: Volume, moving: Volume, out_fixed: Path, out_moving: Path, *,
                        fixed_mask: Volume | None = None, moving_mask: Volume | None = None,
                        names: tuple[str, str] = ("subject", "template")) -> tuple[Path, Path]:
    """Two pixel-aligned PNGs (fixed, moving) for a hover/flicker comparison in HTML.

    Both frames have the same size and geometry and carry the same two cord outlines, so
    switching between them shows only the change of underlay.
    """
    views = _registration_views(fixed, moving, fixed_mask, moving_mask)
    panel_fixed, panel_moving = views.sagittal_fixed, views.sagittal_moving
    width_mm, height_mm = panel_fixed.extent[1], panel_fixed.extent[3]
    scale = panel_scale(1, width_mm, height_mm)
    written = []
    for panel, name, out in ((panel_fixed, names[0], out_fixed),
                             (panel_moving, names[1], out_moving)):
        fig = new_figure(width_mm * scale + 0.2, height_mm * scale + 0.5)
        ax = fig.add_axes((0.02, 0.02, 0.96, 0.96 - 0.3 / fig.get_figheight()))
        draw_panel(ax, panel, intensity_window(panel.image))
        _draw_both_outlines(ax, panel_fixed, panel_fixed.mask, panel_moving.mask)
        _title(fig, name)
        written.append(save_figure(fig, out))
    return written[0], written[1]


def plot_csa(position_mm: NDArray, csa_mm2: NDArray, out: Path, *,
             discs: Sequence[tuple[int, float]] = (), title: str | None = None) -> Path:
    """Cross-sectional area along the cord, superior up, with vertebral bands.

    Parameters
    ----------
    position_mm
        (N,) float, mm: position of each measurement along the cord axis, larger = superior
        (e.g. the S coordinate of each axial slice).
    csa_mm2
        (N,) float, mm²; NaN marks slices without a measurement (gaps in the line).
    discs
        ``(value, position_mm)`` SCT disc labels on the same axis; consecutive discs bound the
        shaded, named vertebral bands.
    """
    position = np.asarray(position_mm, dtype=float)
    csa = np.asarray(csa_mm2, dtype=float)
    if position.shape != csa.shape or position.ndim != 1:
        raise ValueError(f"position {position.shape} and CSA {csa.shape} must be equal (N,)")
    order = np.argsort(position)
    fig = new_figure(5.0, 7.0)
    fig.set_facecolor("white")
    ax = fig.add_axes((0.17, 0.08, 0.68, 0.84))
    for n, band in enumerate(vertebra_bands(discs)):
        ax.axhspan(band.lo_mm, band.hi_mm, color="#d9e6f2" if n % 2 == 0 else "#f2f2f2", lw=0)
        ax.text(1.02, (band.lo_mm + band.hi_mm) / 2, band.name, transform=ax.get_yaxis_transform(),
                va="center", ha="left", fontsize=9)
    for value, pos in discs:
        if 1 <= value <= 30:
            ax.axhline(pos, color="#7f7f7f", lw=0.6, ls=":")
    ax.plot(csa[order], position[order], color="#1f4e79", lw=1.5, marker=".", markersize=3)
    ax.set_xlabel("cross-sectional area (mm²)")
    ax.set_ylabel("position along the cord (mm, superior up)")
    if np.isfinite(csa).any():
        ax.set_xlim(0, np.nanmax(csa) * 1.15)
    ax.grid(axis="x", color="#cccccc", lw=0.5)
    if title:
        ax.set_title(title, fontsize=11)
    return save_figure(fig, out)


def plot_sagittal_series(images: Sequence[Volume], out: Path, *, titles: Sequence[str],
                         mask: Volume | None = None, title: str | None = None) -> Path:
    """Mid-sagittal slices of several images on one grid, side by side (template iterations).

    ``mask`` (on the same grid) picks the slice and is outlined on every panel.
    """
    if not images or len(images) != len(titles):
        raise ValueError("give one title per image, and at least one image")
    ras_images = [reorient(image) for image in images]
    ras_mask = on_grid(mask, ras_images[0], "mask")
    index = midcord_index(ras_mask, ras_images[0].shape)
    panels = [make_panel(ras, ras_mask, axis=0, index=index) for ras in ras_images]
    width_mm, height_mm = panels[0].extent[1], panels[0].extent[3]
    n = len(panels)
    scale = min(panel_scale(1, width_mm, height_mm), 14.0 / (n * width_mm))
    head = 0.3 + (0.3 if title else 0.0)
    fig = new_figure(n * width_mm * scale + 0.2, height_mm * scale + head + 0.1)
    top = 1.0 - head / fig.get_figheight()
    for k, (panel, caption) in enumerate(zip(panels, titles, strict=True)):
        ax = fig.add_axes((k / n + 0.002, 0.01, 1 / n - 0.004, top - 0.01))
        draw_panel(ax, panel, intensity_window(panel.image))
        draw_outline(ax, panel.mask, panel, TEMPLATE_COLOR)
        ax.set_title(caption, color="white", fontsize=9)
    _title(fig, title)
    return save_figure(fig, out)


def plot_convergence(iteration: Sequence[int], median_sd: Sequence[float],
                     change: Sequence[float], out: Path, *, title: str | None = None) -> Path:
    """Template convergence: median SD inside the mask and RMS change between iterations.

    ``change`` may hold NaN (no previous iteration).
    """
    fig = new_figure(6.0, 3.6)
    fig.set_facecolor("white")
    ax = fig.add_axes((0.12, 0.15, 0.74, 0.72))
    ax.plot(iteration, median_sd, color="#1f4e79", marker="o", lw=1.5,
            label="median SD in the cord mask")
    ax.set_xlabel("iteration")
    ax.set_ylabel("median SD", color="#1f4e79")
    twin = ax.twinx()
    twin.plot(iteration, change, color="#c0504d", marker="s", lw=1.2, ls="--",
              label="RMS change from the previous average")
    twin.set_ylabel("RMS change", color="#c0504d")
    ax.grid(color="#dddddd", lw=0.5)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=11)
    return save_figure(fig, out)
