"""QC figures of SCT's spine labels: vertebrae, discs, canal and rootlets, with a warning banner.

SCT's spine task labels every vertebra, disc and the spinal canal, and its rootlet model labels
the dorsal rootlets by spinal level. These labels are only worth using once a reader has seen
them land on the anatomy, so they get figures of their own: each level in its own colour, named
in the margin, and a dark red banner listing whatever the vertebra/disc consistency check
flagged. The shared drawing (figure, panel, outlines, disc markers, atomic save) comes from
:mod:`spinal_bidsapp.reports.figures`, and the orientation conventions are the same.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.geometry.discs import spinal_level_name
from spinal_bidsapp.image import Volume, index_range, reorient
from spinal_bidsapp.reports.figures import (
    CORD_COLOR,
    DISC_MARGIN_IN,
    PANEL_BOX_IN,
    TEMPLATE_COLOR,
    draw_discs,
    draw_outline,
    draw_panel,
    new_figure,
    on_grid,
    panel_scale,
    save_figure,
)
from spinal_bidsapp.reports.views import (
    Panel,
    cord_depth,
    intensity_window,
    label_centres,
    label_name,
    make_cord_coronal,
    make_panel,
    midcord_index,
    slab_projection,
    spread_labels,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D


CANAL_COLOR = "#ffd60a"
"""Spinal canal outline (yellow)."""
FLAG_COLOR = "#b3261e"
"""Background of the warning banner (dark red)."""
VERTEBRA_COLORS = ("#3d7eff", "#ff8c1a", "#3ddc84", "#c45cff", "#ff4fd8", "#a0e040")
"""Vertebra fills, cycled by SCT value (C1 = 1 takes the first); neighbours always differ."""
ROOTLET_COLORS = ("#ffcc00", "#ff8c1a", "#3ddc84", "#3d7eff", "#ff4fd8", "#00e5ff", "#c45cff",
                  "#c6ff3d", "#ff9eb5")
"""Rootlet fills by spinal level, C1 = 1 takes the first (C1..C8, T1 = nine colours)."""
_VERTEBRA_SLAB_MM = 4.0
"""Vertebra labels within this distance (R) of the displayed slice are projected onto it."""
_LEVEL_MARGIN_IN = 0.7
"""Right margin, inches, holding the vertebra or spinal level names."""


def level_color(value: int, palette: Sequence[str]) -> str:
    """Colour of label ``value`` (1-based) in a cyclic ``palette``.

    >>> level_color(1, VERTEBRA_COLORS) == VERTEBRA_COLORS[0], level_color(7, ("a", "b", "c"))
    (True, 'a')
    """
    return palette[(int(value) - 1) % len(palette)]


def _label_rgba(labels: NDArray[np.int64], palette: Sequence[str], alpha: float
                ) -> NDArray[np.float32]:
    """(rows, cols, 4) RGBA image of a 2-D label cut; transparent where the label is 0."""
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*labels.shape, 4), np.float32)
    for value in np.unique(labels[labels > 0]):
        rgba[labels == value] = to_rgba(level_color(int(value), palette), alpha)
    return rgba


def _draw_labels(ax: Axes, panel: Panel, labels: NDArray[np.int64], palette: Sequence[str], *,
                 alpha: float, outline: bool) -> None:
    """Label cut filled in its palette colours (and each label outlined, opaque)."""
    ax.imshow(_label_rgba(labels, palette, alpha), extent=panel.extent, origin="upper",
              interpolation="nearest", aspect="equal")
    if outline:
        for value in np.unique(labels[labels > 0]):
            draw_outline(ax, labels == value, panel, level_color(int(value), palette))


def _margin_names(ax: Axes, names: Sequence[tuple[str, float, str]], *, edge_x: float,
                  text_x: float, mm_per_in: float, lower: float) -> None:
    """Names ``(text, y, colour)`` beside a panel, spread apart, with leaders to ``edge_x``."""
    from matplotlib import patheffects

    if not names:
        return
    stroke = [patheffects.withStroke(linewidth=3, foreground="black")]
    spread = spread_labels([y for _, y, _ in names], min_gap=0.17 * mm_per_in, lower=lower)
    ha = "left" if text_x > edge_x else "right"
    for (text, y, color), y_text in zip(names, spread, strict=True):
        ax.plot([edge_x, text_x], [y, y_text], color=color, linewidth=0.8, clip_on=False)
        ax.text(text_x, y_text, text, color=color, fontsize=10, fontweight="bold", ha=ha,
                va="center", path_effects=stroke, clip_on=False)


def _flag_banner(fig: Figure, flagged: Sequence[str], height_in: float) -> None:
    """Dark red strip across the top of the figure listing the consistency problems."""
    from matplotlib.patches import Rectangle

    fig_h = fig.get_figheight()
    fig.add_artist(Rectangle((0.0, 1.0 - height_in / fig_h), 1.0, height_in / fig_h,
                             transform=fig.transFigure, facecolor=FLAG_COLOR, edgecolor="none"))
    fig.text(0.5, 1.0 - height_in / fig_h / 2, _banner_text(flagged, fig.get_figwidth()),
             color="white", fontsize=10, fontweight="bold", ha="center", va="center")


def _banner_text(flagged: Sequence[str], width_in: float) -> str:
    """Wrapped banner text (about 11 bold 10-pt characters per inch).

    >>> _banner_text(["missing C4", "discs out of order"], 6.0)
    '⚠ CHECK: missing C4; discs out of order'
    """
    text = "⚠ CHECK: " + "; ".join(flagged)
    return "\n".join(textwrap.wrap(text, width=max(20, int(width_in * 11))))


def plot_spine_labels(image: Volume, out: Path, *, vertebrae: Volume, discs: Volume | None = None,
                      cord: Volume | None = None, canal: Volume | None = None,
                      flagged: Sequence[str] = ()) -> Path:
    """Sagittal spine labelling view: coloured vertebrae, discs, cord and canal, named levels.

    Parameters
    ----------
    image
        Anatomical image, any orientation.
    out
        PNG path, written atomically.
    vertebrae
        Vertebra label image on the image grid, SCT numbering (C1 = 1 … L5 = 24, S1 = 25 …).
        Labels within 4 mm (R) of the displayed slice are filled semi-transparently, one colour
        per level (:data:`VERTEBRA_COLORS`), and outlined; every level present is named in the
        right margin at its centroid height.
    discs
        Disc label image on the image grid (single voxels, SCT values), marked in cyan and named
        in the left margin; labels off the displayed slice are projected onto it.
    cord, canal
        Cord and spinal canal masks on the image grid, outlined in red and yellow. The slice
        shown is the median R index of the cord, or of the vertebrae when there is no cord.
    flagged
        Short texts of consistency problems (``"missing C4"``, ``"discs out of order"``); when
        any is given, a red warning banner across the top lists them.
    """
    ras = reorient(image)
    ras_vertebrae = on_grid(vertebrae, ras, "vertebra labels")
    assert ras_vertebrae is not None
    ras_discs, ras_cord, ras_canal = (on_grid(v, ras, w) for v, w in (
        (discs, "disc labels"), (cord, "cord mask"), (canal, "canal mask")))
    has_cord = ras_cord is not None and bool(np.any(ras_cord.data > 0))
    index = midcord_index(ras_cord if has_cord else ras_vertebrae, ras.shape)
    panel = make_panel(ras, ras_cord, axis=0, index=index)
    half = round(_VERTEBRA_SLAB_MM / float(ras.zooms[0]))
    labels = slab_projection(ras_vertebrae, panel, (index - half, index + half + 1))
    width_mm, height_mm = panel.extent[1], panel.extent[3]
    scale = panel_scale(1, width_mm, height_mm)
    margins_in = (DISC_MARGIN_IN, _LEVEL_MARGIN_IN)
    fig_w = width_mm * scale + sum(margins_in) + 0.2
    banner_in = 0.35 + 0.2 * _banner_text(flagged, fig_w).count("\n") if flagged else 0.0
    handles = _spine_legend(ras_cord is not None, ras_canal is not None, ras_discs is not None)
    legend_in = 0.35 if handles else 0.0
    fig = new_figure(fig_w, height_mm * scale + banner_in + legend_in + 0.2)
    fig_h = fig.get_figheight()
    ax = fig.add_axes((0.1 / fig_w, (0.1 + legend_in) / fig_h, 1 - 0.2 / fig_w,
                       height_mm * scale / fig_h))
    draw_panel(ax, panel, intensity_window(panel.image))
    _draw_labels(ax, panel, labels, VERTEBRA_COLORS, alpha=0.45, outline=True)
    draw_outline(ax, panel.mask, panel, CORD_COLOR)
    if ras_canal is not None:
        draw_outline(ax, make_panel(ras, ras_canal, axis=0, index=index).mask, panel,
                      CANAL_COLOR)
    ax.set_xlim(-margins_in[0] / scale, width_mm + margins_in[1] / scale)
    if ras_discs is not None:
        draw_discs(ax, panel, ras_discs, mm_per_in=1 / scale)
    names = [(label_name(value), float(panel.vox_to_xy(ijk[None])[0, 1]),
              level_color(value, VERTEBRA_COLORS))
             for value, ijk in sorted(label_centres(ras_vertebrae.data).items())]
    _margin_names(ax, names, edge_x=width_mm, text_x=width_mm + 0.1 / scale,
                  mm_per_in=1 / scale, lower=panel.extent[2])
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
                   labelcolor="white", fontsize=9, bbox_to_anchor=(0.5, 0.0))
    if flagged:
        _flag_banner(fig, flagged, banner_in)
    return save_figure(fig, out)


def _spine_legend(cord: bool, canal: bool, discs: bool) -> list[Line2D]:
    from matplotlib.lines import Line2D

    handles = []
    if cord:
        handles.append(Line2D([], [], color=CORD_COLOR, lw=2, label="cord"))
    if canal:
        handles.append(Line2D([], [], color=CANAL_COLOR, lw=2, label="canal"))
    if discs:
        handles.append(Line2D([], [], color=TEMPLATE_COLOR, marker="o", ls="none",
                              markeredgecolor="black", label="disc"))
    return handles


_ROOTLET_SLAB_MM = (15.0, 10.0)
"""Rootlets are projected over the cord's R (sagittal view) and A (coronal view) extent plus
these margins, mm: wide enough to reach the foramina, narrow enough to leave out distant
false positives."""
_ROOTLET_CONTEXT_MM = 10.0
"""Anatomy shown beyond the projection slab (columns) and beyond the rootlets (rows), mm."""


def plot_rootlets(image: Volume, rootlets: Volume, out: Path, *,
                  cord: Volume | None = None) -> Path:
    """Rootlets coloured by spinal level on a coronal and a sagittal view of the anatomy.

    Parameters
    ----------
    image
        Anatomical image (T2w), any orientation.
    rootlets
        Rootlet segmentation on the image grid; values are spinal levels (C1..C8 = 1..8,
        T1 = 9), each drawn in its :data:`ROOTLET_COLORS` colour as a maximum-intensity
        projection over a slab around the cord: over A on the coronal view, over R on the
        sagittal one. Each level is named in both margins at its rostro-caudal centre.
    out
        PNG path, written atomically.
    cord
        Cord mask on the image grid, outlined in red. It sets the slabs (cord extent plus 15 mm
        in R, 10 mm in A), the sagittal slice (median R of the cord) and the coronal surface,
        which follows the cord centre slice by slice so a curved cord stays in view. Without
        it, the projections cover the whole volume and the middle slices are shown.
    """
    ras = reorient(image)
    ras_rootlets = on_grid(rootlets, ras, "rootlets")
    assert ras_rootlets is not None
    ras_cord = on_grid(cord, ras, "cord mask")
    slab_r = index_range(ras_cord, 0, margin_mm=_ROOTLET_SLAB_MM[0], size=ras.shape[0])
    slab_a = index_range(ras_cord, 1, margin_mm=_ROOTLET_SLAB_MM[1], size=ras.shape[1])
    kept = np.zeros(ras.shape, np.int64)
    box = np.s_[slab_r[0]:slab_r[1], slab_a[0]:slab_a[1]]
    kept[box] = np.rint(ras_rootlets.data[box])
    kept_volume = ras.with_data(kept)
    rows = index_range(kept_volume, 2, margin_mm=_ROOTLET_CONTEXT_MM)
    coronal = make_cord_coronal(
        ras, ras_cord, depth=cord_depth(ras_cord, ras.shape), row_range=rows,
        col_range=_widen(slab_r, _ROOTLET_CONTEXT_MM / float(ras.zooms[0]), ras.shape[0]))
    sagittal = make_panel(
        ras, ras_cord, axis=0, index=midcord_index(ras_cord, ras.shape), row_range=rows,
        col_range=_widen(slab_a, _ROOTLET_CONTEXT_MM / float(ras.zooms[1]), ras.shape[1]))
    panels = ((coronal, "coronal, along the cord"), (sagittal, "sagittal"))
    widths = [p.extent[1] for p, _ in panels]
    height_mm = coronal.extent[3]
    scale = min(2 * PANEL_BOX_IN[0] / sum(widths), PANEL_BOX_IN[1] / height_mm)
    margin_in, gap_in, head_in = 0.45, 0.25, 0.35
    fig_w = sum(widths) * scale + 2 * margin_in + gap_in
    fig = new_figure(fig_w, height_mm * scale + head_in + 0.1)
    fig_h = fig.get_figheight()
    centres = label_centres(kept)
    left_in = margin_in
    for n, (panel, caption) in enumerate(panels):
        ax = fig.add_axes((left_in / fig_w, 0.1 / fig_h, panel.extent[1] * scale / fig_w,
                           height_mm * scale / fig_h))
        left_in += panel.extent[1] * scale + gap_in
        draw_panel(ax, panel, intensity_window(panel.image))
        whole = (0, max(ras.shape))  # kept already holds only the rootlets in the slabs
        _draw_labels(ax, panel, slab_projection(kept_volume, panel, whole), ROOTLET_COLORS,
                     alpha=1.0, outline=False)
        draw_outline(ax, panel.mask, panel, CORD_COLOR)
        ax.set_title(caption, color="white", fontsize=10)
        names = [(spinal_level_name(v), float(panel.vox_to_xy(ijk[None])[0, 1]),
                  level_color(v, ROOTLET_COLORS)) for v, ijk in sorted(centres.items())]
        edge = 0.0 if n == 0 else panel.extent[1]
        _margin_names(ax, names, edge_x=edge, text_x=edge + (0.06 if n else -0.06) / scale,
                      mm_per_in=1 / scale, lower=panel.extent[2])
        if not centres:
            ax.text(0.5, 0.5, "no rootlets found", transform=ax.transAxes, color="yellow",
                    ha="center", va="center", fontsize=11, fontweight="bold")
    return save_figure(fig, out)


def _widen(span: tuple[int, int], by: float, size: int) -> tuple[int, int]:
    """``[start, stop)`` widened by ``by`` voxels each side, clipped to ``[0, size)``."""
    return max(0, span[0] - round(by)), min(size, span[1] + round(by))
