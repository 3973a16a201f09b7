"""Template-building protocol: options, presets and the antsRegistration command of one level.

Everything here is pure (no files are read, nothing is run): the options dataclass, the named
presets, and the functions that turn a protocol level ``level_mm`` into an explicit
``antsRegistration`` argument list. The level keeps the meaning it has in nist_mni_pipelines
(``ipl``): the finest scale, in mm, of the deformation estimated during that iteration (ipl: the
minctracc lattice step, blurred with FWHM ``level/2``).

Mapping of a level onto SyN (one deformable stage, no linear stage, as ``ants.registration``'s
``type_of_transform='SyNOnly'`` preset):

* finest shrink factor ``s = clamp(floor(level_mm / voxel_mm), 1, max_shrink)``, one coarser
  pyramid level at ``2 s`` (skipped when it would exceed ``max_shrink``), so the deformation is
  estimated on a grid of about ``level`` mm (ipl: lattice step ``level``); a last level at full
  resolution with 0 iterations makes ANTs write its fields on the template grid;
* Gaussian smoothing before shrinking by ``s``: ``sigma = max(s * voxel_mm / 2, level_mm / (2 *
  2.3548))`` mm, i.e. half a shrunk voxel (ANTs' usual ``8x4x2x1`` / ``3x2x1x0`` rule, which
  avoids aliasing) and never less than ipl's blur (FWHM ``level/2``);
* metric ``CC`` (local normalised cross-correlation, radius in voxels of the shrunk image);
* ``max_shrink`` keeps at least :data:`MIN_SHRUNK_VOXELS` voxels along every axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
MIN_SHRUNK_VOXELS = 8
"""A pyramid level never shrinks an axis below this many voxels."""

PresetName = Literal["seed", "fast"]
MetricName = Literal["CC", "Mattes", "MeanSquares"]


@dataclass(frozen=True)
class Stage:
    """``iterations`` template iterations whose registrations stop at scale ``level_mm``."""

    level_mm: float
    iterations: int

    def __post_init__(self) -> None:
        if self.level_mm <= 0 or self.iterations < 1:
            raise ValueError(f"a stage needs level_mm > 0 and iterations >= 1, got {self}")


SEED_PROTOCOL: tuple[Stage, ...] = (Stage(8.0, 4), Stage(4.0, 4), Stage(2.0, 4), Stage(1.0, 4))
"""The neuropoly/template seed protocol (``generate_template.py``): 8/4/2/1 mm x 4 iterations."""

FAST_PROTOCOL: tuple[Stage, ...] = (Stage(4.0, 2), Stage(2.0, 2))
"""Demo and test protocol: 4 iterations, registration stops at 2 mm."""


@dataclass(frozen=True)
class TemplateOptions:
    """Every parameter of a builtin template build (all of them enter the resume ledger).

    Attributes
    ----------
    protocol : tuple of Stage
        Levels and iteration counts, coarse to fine (default: the seed's 8/4/2/1 mm x 4).
    symmetric : bool
        Add the left-right mirror of every subject (mirror plane through the grid centre, normal
        to world x; the grid must have a voxel axis along x) and symmetrise every average, as
        ipl's symmetric mode does.
    refine : bool
        Warm-start each registration from the subject's corrected warp of the previous iteration
        (ipl ``refine=True``, antsRegistration ``--initial-moving-transform``); otherwise every
        registration starts from the identity. Off by default: SyN regularises only each
        increment, so warm-started increments accumulate; on the 1 mm test phantom (CC radius 2,
        step 0.25) the template drifted from the true shape (RMS error 18 vs 12.5), and on the
        benchmark cohort it was as good as a cold start but slower (docs/benchmarks.md).
    syn_step : float
        SyN gradient step (``SyN[step, ...]``), in voxels of the current pyramid level.
    update_variance_vox : float
        SyN update-field smoothing (variance, voxels), the regulariser of each increment.
    total_variance_vox : float
        SyN total-field smoothing (variance, voxels); 0 as in ANTs' presets.
    metric : {'Mattes', 'CC', 'MeanSquares'}
        Similarity metric: Mattes mutual information (32 bins, ``ants.registration``'s default),
        local normalised cross-correlation (ANTs' template script; ipl uses minctracc's
        ``corrcoeff``) or mean squares (inputs are intensity-normalised). On straightened
        phantoms all three gave the same template; Mattes was the fastest (docs/benchmarks.md).
    cord_weight : float
        Weight of a second similarity term, mean squares between the template's cord probability
        and the subject's cord mask, next to the intensity metric (weight 1; ANTs normalises the
        weights to sum 1); 0 registers on intensity alone. The cord mask as a registration
        channel, as AMU7T's template did: the intensity metric sees the cord boundary as a small
        part of the field of view, the cord term sees nothing else. On 8 curved phantoms at
        0.5 mm it raised the cord overlap at the 1 mm level (docs/benchmarks.md, "Group template
        at the seed preset").
    cc_radius_vox : int
        With ``metric='CC'``: radius of the window, in voxels of the current pyramid level (1: as
        accurate as 2 on straightened phantoms at a third of the cost).
    coarse_iterations, fine_iterations : int
        Gradient-descent iterations at the coarser and the finest pyramid level of a registration.
    convergence_threshold : float
        ``antsRegistration`` convergence threshold over a window of 8 iterations.
    seed : int
        ``--random-seed`` of every registration. The metrics use dense sampling (no sampling
        strategy is passed), so this only pins ANTs' internal generator; antspyx 0.6.3 has no
        ``random_seed`` argument, only the global ``ants.config.set_ants_deterministic``.
    threads_per_worker : int
        ITK threads of each registration worker.
    keep_warps : bool
        Keep every iteration's per-subject warps; otherwise only the last two iterations'.
    """

    protocol: tuple[Stage, ...] = SEED_PROTOCOL
    symmetric: bool = True
    refine: bool = False
    syn_step: float = 0.1
    update_variance_vox: float = 3.0
    total_variance_vox: float = 0.0
    metric: MetricName = "Mattes"
    cord_weight: float = 1.0
    cc_radius_vox: int = 1
    coarse_iterations: int = 40
    fine_iterations: int = 20
    convergence_threshold: float = 1e-6
    seed: int = 20251121
    threads_per_worker: int = 1
    keep_warps: bool = False

    def __post_init__(self) -> None:
        if not self.protocol:
            raise ValueError("the protocol needs at least one stage")
        if self.cc_radius_vox < 1 or self.coarse_iterations < 0 or self.fine_iterations < 1:
            raise ValueError("cc_radius_vox >= 1, coarse_iterations >= 0, fine_iterations >= 1")
        if self.metric not in ("CC", "Mattes", "MeanSquares"):
            raise ValueError(f"unknown metric {self.metric!r} (CC, Mattes, MeanSquares)")
        if self.cord_weight < 0:
            raise ValueError(f"cord_weight must be >= 0, got {self.cord_weight}")
        if self.threads_per_worker < 1:
            raise ValueError("threads_per_worker must be >= 1")

    @property
    def n_iterations(self) -> int:
        return sum(stage.iterations for stage in self.protocol)

    def iteration_levels(self) -> list[float]:
        """``level_mm`` of iterations 1..n (index 0 is iteration 1)."""
        return [stage.level_mm for stage in self.protocol for _ in range(stage.iterations)]

    def ledger_params(self) -> dict[str, object]:
        """Parameters that change results (threads and cleanup do not)."""
        params = asdict(self)
        for name in ("threads_per_worker", "keep_warps"):
            params.pop(name)
        return params


def preset_options(name: PresetName, **overrides: object) -> TemplateOptions:
    """Named presets: ``seed`` (real runs, 8/4/2/1 mm x 4) and ``fast`` (demo, tests).

    >>> preset_options("fast").n_iterations
    4
    """
    if name == "seed":
        base = TemplateOptions()
    elif name == "fast":
        base = TemplateOptions(protocol=FAST_PROTOCOL, coarse_iterations=30, fine_iterations=15)
    else:
        raise ValueError(f"unknown template preset {name!r} (seed, fast)")
    values = {**asdict(base), **overrides}
    values["protocol"] = tuple(Stage(**s) if isinstance(s, dict) else s
                               for s in values["protocol"])
    return TemplateOptions(**values)


@dataclass(frozen=True)
class Pyramid:
    """Multi-resolution schedule of one registration, coarse to fine."""

    shrink_factors: tuple[int, ...]
    sigmas_mm: tuple[float, ...]
    iterations: tuple[int, ...]


def max_shrink_factor(shape: Sequence[int]) -> int:
    """Largest shrink factor keeping :data:`MIN_SHRUNK_VOXELS` voxels on the shortest axis.

    >>> max_shrink_factor((24, 24, 40))
    3
    """
    return max(1, min(int(n) for n in shape) // MIN_SHRUNK_VOXELS)


def level_pyramid(level_mm: float, *, voxel_mm: float, shape: Sequence[int],
                  options: TemplateOptions) -> Pyramid:
    """Shrink factors, smoothing and iterations for a registration that stops at ``level_mm``.

    Parameters
    ----------
    level_mm : float
        Protocol level, mm.
    voxel_mm : float
        Largest voxel size of the template grid, mm.
    shape : sequence of int
        Template grid shape.

    Examples
    --------
    >>> p = level_pyramid(4.0, voxel_mm=0.5, shape=(200, 200, 400), options=TemplateOptions())
    >>> p.shrink_factors, p.iterations
    ((16, 8, 1), (40, 20, 0))
    """
    limit = max_shrink_factor(shape)
    fine = min(limit, max(1, int(level_mm / voxel_mm + 1e-6)))
    sigma = _sigma_mm(fine, voxel_mm=voxel_mm, level_mm=level_mm)
    shrink, sigmas, iterations = [fine], [sigma], [options.fine_iterations]
    if 2 * fine <= limit and options.coarse_iterations > 0:
        coarse_sigma = _sigma_mm(2 * fine, voxel_mm=voxel_mm, level_mm=2 * level_mm)
        shrink, sigmas = [2 * fine, *shrink], [coarse_sigma, *sigmas]
        iterations = [options.coarse_iterations, *iterations]
    if fine > 1:  # 0 iterations at full resolution: ANTs then writes full-resolution fields
        shrink, sigmas, iterations = [*shrink, 1], [*sigmas, 0.0], [*iterations, 0]
    return Pyramid(shrink_factors=tuple(shrink), sigmas_mm=tuple(sigmas),
                   iterations=tuple(iterations))


def _sigma_mm(shrink: int, *, voxel_mm: float, level_mm: float) -> float:
    """Smoothing before shrinking: half the shrunk voxel (ANTs' rule), at least ipl's FWHM L/2."""
    return max(0.5 * shrink * voxel_mm, 0.5 * level_mm * FWHM_TO_SIGMA)


def _metric(options: TemplateOptions, *, fixed: Path, moving: Path) -> str:
    images = f"{_check_path(fixed)},{_check_path(moving)},1"
    if options.metric == "CC":
        return f"CC[{images},{options.cc_radius_vox}]"
    if options.metric == "Mattes":
        return f"Mattes[{images},32]"
    return f"MeanSquares[{images},0]"


def _check_path(path: Path) -> str:
    text = str(path)
    if any(ch in text for ch in ",[]"):
        raise ValueError(f"antsRegistration cannot take a path with ',', '[' or ']': {text}")
    return text


def registration_argv(*, fixed: Path, moving: Path, out_prefix: Path, pyramid: Pyramid,
                      options: TemplateOptions, initial_warp: Path | None,
                      cords: tuple[Path, Path] | None = None) -> list[str]:
    """``antsRegistration`` arguments: one SyN stage, CC metric, mm smoothing, fixed seed.

    ``cords`` (template cord probability, subject cord mask) adds the cord term of weight
    ``options.cord_weight`` (when it is > 0).

    The outputs are ``<out_prefix>0Warp.nii.gz`` (fixed -> moving displacement, ITK pull
    convention) without an initial warp, or ``<out_prefix>1Warp.nii.gz`` (the increment, to be
    applied before the initial warp) with one; inverse warps are written next to them.
    """
    argv = [
        "--dimensionality", "3",
        "--float", "1",
        "--collapse-output-transforms", "1",
        "--output", f"[{_check_path(out_prefix)}]",
        "--interpolation", "Linear",
        "--use-histogram-matching", "0",
        "--random-seed", str(options.seed),
    ]
    if initial_warp is not None:
        argv += ["--initial-moving-transform", _check_path(initial_warp)]
    syn = (f"SyN[{options.syn_step:g},{options.update_variance_vox:g},"
           f"{options.total_variance_vox:g}]")
    argv += [
        "--transform", syn,
        "--metric", _metric(options, fixed=fixed, moving=moving),
    ]
    if cords is not None and options.cord_weight > 0:
        argv += ["--metric", f"MeanSquares[{_check_path(cords[0])},{_check_path(cords[1])},"
                             f"{options.cord_weight:g},0]"]
    argv += [
        "--convergence",
        f"[{'x'.join(str(i) for i in pyramid.iterations)},{options.convergence_threshold:g},8]",
        "--shrink-factors", "x".join(str(s) for s in pyramid.shrink_factors),
        "--smoothing-sigmas", "x".join(f"{s:.4g}" for s in pyramid.sigmas_mm) + "mm",
    ]
    return argv
