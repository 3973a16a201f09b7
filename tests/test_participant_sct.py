"""The SCT engine path of the participant level, end to end, against a wiring double of SCT.

SCT is not installed here, so the "SCT installation" built by these tests (``$SCT_DIR/bin`` with
``sct_deepseg``, ``sct_label_vertebrae``, ``sct_register_to_template``,
``sct_process_segmentation``, ``sct_version`` and ``$SCT_DIR/version.txt`` = 7.3) is a **test
double for the wiring only**. Each program records its argv, then writes the files SCT would
write, taken from **real SCT outputs** of sub-errsm30 T2w in ``sct-reference/``:

* ``sct_deepseg spinalcord -i IMG -o OUT``: SCT's deepseg segmentation (``_seg-deepseg2d``), put on
  the grid of ``IMG`` by permuting and flipping axes (no resampling), as SCT writes its outputs;
* ``sct_deepseg spine -i IMG -o D/spine.nii.gz -label-vert 1``:
  ``D/spine_totalspineseg_discs.nii.gz``, disc labels placed between the levels of SCT's labeled
  segmentation (``_seg-manual_labeled``, via ``write_discs_from_labeled_segmentation``), and
  ``D/spine_totalspineseg_all.nii.gz``, a TotalSpineSeg step-2 label map **drawn by the double**
  from those levels (no real TotalSpineSeg output exists here): cord 1 (the deepseg mask), canal 2
  (a 3 mm shell around it), a vertebral body 11+N in front of the cord over the slices of level
  N, and disc 60+N on the slice between levels N-1 and N; both on the grid of ``IMG``;
* ``sct_deepseg rootlets -i IMG -o OUT``: SCT's real rootlet segmentation (``_rootlets-deepseg``,
  spinal levels 3-6);
* ``sct_register_to_template ... -ofolder D`` (``-ldisc`` or ``-lrootlet``: the double returns
  the same warp for both, so the two paths score alike and only the rule decides):
  ``D/warp_template2anat.nii.gz`` is SCT's real
  template->anat warp (``_warp-PAM50small2anat``, from ``sct_register_to_template -t
  PAM50_small``) on the grid of ``-i``. No real anat->template warp is stored, so
  ``D/warp_anat2template.nii.gz`` is that real warp **inverted by the double** with
  :func:`spinal_bidsapp.geometry.fields.invert_field` onto the ``-t`` template grid (computed on
  the first call and reused by later calls of the same test module);
* any other command (``sct_label_vertebrae``, ``sct_process_segmentation``) exits with status 2:
  the pinned release never needs them here.

The double never stands in for a measured result: what is asserted is the wiring (argv built by
the pinned-version command builders, manual labels never sent through SCT, outputs named by the
derivatives table and valid BIDS) and that the registration metrics our pipeline writes are the
ones our benchmark scorer computes from SCT's *real* warp. SCT itself runs only in the container
CI (``tests/engines/test_sct_engine_real.py``, marker ``sct``).
"""

from __future__ import annotations

import html
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.bids.dataset import SourceImage
from spinal_bidsapp.bids.outputs import OUTPUTS, derivative_path, sidecar_path
from spinal_bidsapp.bids.validate import find_validator
from spinal_bidsapp.cli.main import main
from spinal_bidsapp.engines.sct.commands import (
    build_process_segmentation_argv,
    build_register_argv,
    build_rootlets_argv,
    build_segment_cord_argv,
    build_spine_argv,
)
from spinal_bidsapp.engines.sct.install import DEEPSEG_MODELS, INSTALL_HINT, SCT_PINNED_VERSION
from spinal_bidsapp.geometry.discs import discs_from_label_array
from spinal_bidsapp.image import load_field, load_mask, reorient
from spinal_bidsapp.runtime.ledger import LEDGER_NAME, params_digest
from spinal_bidsapp.templates.pam50 import resolve_pam50

REFERENCE = "sct-reference"
SUBJECT = "sub-errsm30"


# ------------------------------------------------------------------------- the wiring double


def _option(argv: list[str], flag: str) -> Path:
    return Path(argv[argv.index(flag) + 1])


def _onto_grid_of(source: Path, like: Path, out: Path) -> None:
    """Write ``source`` (3-D image or 5-D ITK field) on the grid of ``like``: axes only."""
    img, ref = nib.load(str(source)), nib.load(str(like))
    data = np.asanyarray(img.dataobj)
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(img.affine),
                                                nib.orientations.io_orientation(ref.affine))
    moved = nib.orientations.apply_orientation(data, transform)
    affine = img.affine @ nib.orientations.inv_ornt_aff(transform, data.shape[:3])
    if moved.shape[:3] != ref.shape[:3] or not np.allclose(affine, ref.affine, atol=1e-3):
        raise SystemExit(f"wiring double: {like} is not a grid of {SUBJECT} T2w")
    result = nib.Nifti1Image(moved, affine, img.header)
    result.set_sform(affine, code=1)
    result.set_qform(affine, code=1)
    nib.save(result, str(out))


def _draw_totalspineseg(labeled: Path, cord: Path, out: Path) -> None:
    """A TotalSpineSeg step-2 map drawn from SCT's vertebral levels (see the module docstring)."""
    from scipy import ndimage

    img = nib.load(str(labeled))
    levels = np.rint(np.asanyarray(img.dataobj)).astype(np.int64)
    seg = np.asanyarray(nib.load(str(cord)).dataobj) > 0
    zooms = np.array(img.header.get_zooms()[:3])
    ras = nib.orientations.io_orientation(img.affine)  # voxel axis -> world axis and sign
    ap_axis, si_axis = (int(np.argwhere(ras[:, 0] == axis)[0, 0]) for axis in (1, 2))
    tss = np.zeros(levels.shape, np.uint8)
    shell = ndimage.binary_dilation(seg, iterations=round(3 / zooms.min()))
    tss[shell] = 2
    tss[seg] = 1
    anterior = 1 if ras[ap_axis, 1] > 0 else -1
    superior = 1 if ras[si_axis, 1] > 0 else -1
    present = sorted(int(v) for v in np.unique(levels) if v > 0)
    for value in present:
        cells = np.argwhere(levels == value)
        centre = np.rint(cells.mean(axis=0)).astype(int)
        slices = np.unique(cells[:, si_axis])
        box = [slice(max(c - 8, 0), c + 9) for c in centre]  # ~8 mm either side of the centre
        front = centre[ap_axis] + anterior * 8
        box[ap_axis] = slice(min(front, front + anterior * 12), max(front, front + anterior * 12))
        box[si_axis] = slice(int(slices.min()), int(slices.max()) + 1)
        tss[tuple(box)] = 10 + value
        if value - 1 in present:  # the disc: the top slice of this level
            top = slices.max() if superior > 0 else slices.min()
            box[si_axis] = slice(int(top), int(top) + 1)
            tss[tuple(box)] = 60 + value
    nib.save(nib.Nifti1Image(tss, img.affine, img.header), str(out))


def _write_pam50_csa_csv(discs: Path, out: Path, pam50_levels: Path) -> None:
    """SCT's per-PAM50-slice CSV for the levels SCT derives from ``discs`` (disc N-1 above the
    top disc N, M below the last disc M), with **made-up** areas 50 + level: the double tests
    the wiring (which rows, which columns), not a measure."""
    from spinal_bidsapp.participant.morphometrics_pam50 import read_pam50_slice_levels

    values = sorted(int(v) for v in np.unique(np.asanyarray(nib.load(str(discs)).dataobj)) if v)
    levels = read_pam50_slice_levels(pam50_levels)
    rows = ["Timestamp,SCT Version,Filename,Slice (I->S),VertLevel,DistancePMJ,MEAN(area),"
            "STD(area)"]
    for index in np.flatnonzero((levels >= values[0] - 1) & (levels <= values[-1])):
        rows.append(f"2026-01-01,{SCT_PINNED_VERSION},seg.nii.gz,{index},{levels[index]},,"
                    f"{50 + levels[index]},")
    out.write_text("\n".join(rows) + "\n")


def _inverse_warp(warp: Path, template_dir: Path, cache: Path) -> Path:
    """The real template->anat warp inverted onto the template grid (computed once)."""
    if not cache.is_file():
        from spinal_bidsapp.geometry.fields import invert_field
        from spinal_bidsapp.image import save_field

        grid = nib.load(str(template_dir / "template" / "PAM50_cord.nii.gz"))
        save_field(invert_field(load_field(warp), grid.shape[:3], grid.affine), cache)
    return cache


def run_sct_double(argv: list[str], *, data: Path, log: Path, cache: Path) -> int:
    """One call of a double program; ``argv[0]`` names it (see the module docstring)."""
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(argv) + "\n")
    program, ref = Path(argv[0]).name, data / REFERENCE
    if program == "sct_version":
        print(SCT_PINNED_VERSION)
        return 0
    if program == "sct_deepseg" and argv[1] == "spinalcord":
        _onto_grid_of(ref / f"{SUBJECT}_T2w_seg-deepseg2d.nii.gz", _option(argv, "-i"),
                      _option(argv, "-o"))
        return 0
    if program == "sct_deepseg" and argv[1] == "spine":
        from spinal_bidsapp.engines.sct.outputs import write_discs_from_labeled_segmentation

        out, labeled = _option(argv, "-o"), ref / f"{SUBJECT}_T2w_seg-manual_labeled.nii.gz"
        stem = out.name.removesuffix(".nii.gz")
        native = out.with_name(f"{stem}_native_discs.nii.gz")
        write_discs_from_labeled_segmentation(labeled, native)
        _onto_grid_of(native, _option(argv, "-i"), out.with_name(f"{stem}_totalspineseg_discs"
                                                                 ".nii.gz"))
        drawn = out.with_name(f"{stem}_native_all.nii.gz")
        _draw_totalspineseg(labeled, ref / f"{SUBJECT}_T2w_seg-deepseg2d.nii.gz", drawn)
        _onto_grid_of(drawn, _option(argv, "-i"), out.with_name(f"{stem}_totalspineseg_all"
                                                                ".nii.gz"))
        return 0
    if program == "sct_deepseg" and argv[1] == "rootlets":
        _onto_grid_of(ref / f"{SUBJECT}_T2w_rootlets-deepseg.nii.gz", _option(argv, "-i"),
                      _option(argv, "-o"))
        return 0
    if program == "sct_process_segmentation" and "-normalize-PAM50" in argv:
        _write_pam50_csa_csv(_option(argv, "-discfile"), _option(argv, "-o"),
                             data / "PAM50" / "PAM50_levels.nii.gz")
        return 0
    if program == "sct_register_to_template":
        folder = _option(argv, "-ofolder")
        warp = ref / f"{SUBJECT}_T2w_warp-PAM50small2anat.nii.gz"
        _onto_grid_of(warp, _option(argv, "-i"), folder / "warp_template2anat.nii.gz")
        shutil.copyfile(_inverse_warp(warp, _option(argv, "-t"), cache),
                        folder / "warp_anat2template.nii.gz")
        return 0
    print(f"wiring double: {program} {argv[1:]} is not expected with SCT {SCT_PINNED_VERSION}",
          file=sys.stderr)
    return 2


@dataclass(frozen=True)
class SctDouble:
    root: Path
    """``$SCT_DIR``; the programs are in ``root/bin``."""
    log: Path

    def calls(self) -> list[list[str]]:
        if not self.log.is_file():
            return []
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]

    def program(self, name: str) -> str:
        return str(self.root / "bin" / name)


PROGRAMS = ("sct_deepseg", "sct_label_vertebrae", "sct_register_to_template",
            "sct_process_segmentation", "sct_version")


@pytest.fixture(scope="module")
def sct_double(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[SctDouble]:
    """The double installed in ``$SCT_DIR`` (set for the whole module)."""
    root = tmp_path_factory.mktemp("sct")
    double = SctDouble(root=root, log=root / "argv.jsonl")
    (root / "bin").mkdir()
    (root / "version.txt").write_text(f"{SCT_PINNED_VERSION}\n")
    sct_template = root / "data" / "PAM50" / "template"  # SCT's own PAM50 (-normalize-PAM50)
    sct_template.mkdir(parents=True)
    (sct_template / "PAM50_levels.nii.gz").symlink_to(data_dir / "PAM50" / "PAM50_levels.nii.gz")
    for models in DEEPSEG_MODELS.values():  # empty weights: pass the engine's presence check
        for model in models:
            (root / "data" / "deepseg_models" / model).mkdir(parents=True)
            (root / "data" / "deepseg_models" / model / "checkpoint_final.pth").write_bytes(b"")
    call = (f"run_sct_double(sys.argv, data=Path({str(data_dir)!r}), "
            f"log=Path({str(double.log)!r}), cache=Path({str(root / 'inverse_warp.nii.gz')!r}))")
    for name in PROGRAMS:
        script = root / "bin" / name
        script.write_text(f"#!{sys.executable}\nimport sys\nfrom pathlib import Path\n"
                          f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                          "from test_participant_sct import run_sct_double\n"
                          f"raise SystemExit({call})\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SCT_DIR", str(root))
        yield double


@dataclass(frozen=True)
class Run:
    bids: Path
    out: Path
    code: int
    calls: list[list[str]]

    @property
    def source(self) -> SourceImage:
        path = self.bids / SUBJECT / "anat" / f"{SUBJECT}_T2w.nii.gz"
        return SourceImage(path, "errsm30", None, "T2w", "anat")

    def path(self, kind: str) -> Path:
        return derivative_path(self.out, kind, self.source, template="PAM50")

    def work(self, step: str) -> Path:
        return self.out / "work" / SUBJECT / step


def _run(double: SctDouble, bids: Path, out: Path, pam50_dir: Path) -> Run:
    double.log.unlink(missing_ok=True)
    code = main([str(bids), str(out), "participant", "--participant-label", "errsm30",
                 "--engine", "sct", "--template-dir", str(pam50_dir), "--skip-bids-validation",
                 "--nprocs", "1"])
    return Run(bids=bids, out=out, code=code, calls=double.calls())


@pytest.fixture(scope="module")
def unlabelled_bids(tmp_path_factory: pytest.TempPathFactory, bids_real: Path) -> Path:
    """sub-errsm30 T2w alone, without derivatives/labels."""
    root = tmp_path_factory.mktemp("unlabelled") / "bids"
    anat = root / SUBJECT / "anat"
    anat.mkdir(parents=True)
    for name in (f"{SUBJECT}_T2w.nii.gz", f"{SUBJECT}_T2w.json"):
        shutil.copyfile(bids_real / SUBJECT / "anat" / name, anat / name)  # raw_uri resolves links
    for name in ("dataset_description.json", "README"):
        shutil.copyfile(bids_real / name, root / name)
    (root / "participants.tsv").write_text(f"participant_id\n{SUBJECT}\n")
    return root


@pytest.fixture(scope="module")
def automatic_run(sct_double: SctDouble, unlabelled_bids: Path, pam50_dir: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(sct_double, unlabelled_bids, tmp_path_factory.mktemp("auto") / "out", pam50_dir)


@pytest.fixture(scope="module")
def manual_run(sct_double: SctDouble, bids_real: Path, pam50_dir: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(sct_double, bids_real, tmp_path_factory.mktemp("manual") / "out", pam50_dir)


# --------------------------------------------------------------------------------- the tests


def test_without_labels_sct_segments_labels_discs_and_registers_with_the_pinned_argv(
        automatic_run: Run, sct_double: SctDouble, pam50_dir: Path) -> None:
    run = automatic_run
    assert run.code == 0
    anat, cord, discs = run.path("anat_preproc"), run.path("cord_mask"), run.path("discs")
    version = SCT_PINNED_VERSION
    expected = [
        build_segment_cord_argv(version, image=anat, contrast="T2w",
                                out=run.work("segment") / "sct" / "cord_seg.nii.gz"),
        build_spine_argv(version, image=anat, out_dir=run.work("spine") / "sct").argv,
        build_rootlets_argv(version, image=anat,
                            out=run.work("rootlets") / "sct" / "rootlets.nii.gz"),
        build_process_segmentation_argv(
            version, cord_mask=cord, discs=discs, per="slice", normalize_pam50=True,
            out_csv=run.work("csa_pam50") / "sct" / "morphometry_perslice.csv"),
        build_register_argv(version, image=anat, cord_mask=cord, template_dir=pam50_dir,
                            contrast="T2w", out_dir=run.work("register_discs") / "sct",
                            discs=discs),
    ]
    # no -lrootlet call: this PAM50 lists no template rootlets (info_label.txt IDs 16, 17)
    assert run.calls == [[sct_double.program(argv[0]), *argv[1:]] for argv in expected]
    segment, spine, _, _, register = run.calls
    assert segment[1:3] == ["spinalcord", "-i"] and spine[1] == "spine"
    assert register[register.index("-c") + 1] == "t2"
    assert register[register.index("-t") + 1] == str(pam50_dir)
    log = latest_log_of(run)
    assert "rootlet-based registration failed, the disc-based one is used" in log
    assert "info_label.txt ID 16" in log


def latest_log_of(run: Run) -> str:
    from tests.conftest import latest_log  # not at module level: the SCT double imports us

    return latest_log(run.out, "participant")


def test_spine_task_gives_vertebrae_canal_and_posterior_tip_discs(automatic_run: Run) -> None:
    from spinal_bidsapp.engines.sct.outputs import TSS_VERTEBRA_TO_SCT

    run = automatic_run
    tss = load_mask(run.work("spine") / "sct" / "spine_totalspineseg_all.nii.gz",
                    allow_empty=True)
    vertebrae = load_mask(run.path("vertebrae"))
    assert np.allclose(vertebrae.affine, tss.affine)
    for source, level in TSS_VERTEBRA_TO_SCT.items():
        assert np.array_equal(vertebrae.data == level, tss.data == source), level
    assert sorted(int(v) for v in np.unique(vertebrae.data) if v) == [2, 3, 4, 5]
    canal, cord = load_mask(run.path("canal_mask")).data > 0, load_mask(
        run.path("cord_mask")).data > 0
    assert np.array_equal(canal, (tss.data == 1) | (tss.data == 2)) and canal[cord].mean() > 0.99
    # the disc labels are SCT's own points, not the centroids of the disc regions
    sct_points = load_mask(run.work("spine") / "sct" / "spine_totalspineseg_discs.nii.gz")
    assert np.array_equal(load_mask(run.path("discs")).data, sct_points.data)
    check = json.loads((run.work("spine") / "spine_check.json").read_text())
    assert check["consistent"] and check["vertebrae"] == ["C2", "C3", "C4", "C5"]
    assert json.loads(sidecar_path(run.path("discs")).read_text())["Consistent"] is True
    lut = run.path("vertebrae_lut").read_text().splitlines()
    assert lut == ["index\tname", "2\tC2", "3\tC3", "4\tC4", "5\tC5"]


def test_canal_volume_and_ratio_per_level(automatic_run: Run) -> None:
    run = automatic_run
    morph = json.loads(run.path("morphometrics_json").read_text())
    measured = [level for level in morph["levels"] if level["cord_volume_mm3"] > 0]
    assert measured
    voxel = abs(np.linalg.det(load_mask(run.path("cord_mask")).affine[:3, :3]))
    for level in measured:
        assert level["canal_volume_mm3"] > level["cord_volume_mm3"]
        assert level["canal_to_cord_ratio"] == pytest.approx(
            level["canal_volume_mm3"] / level["cord_volume_mm3"], abs=2e-3)
        assert level["cord_volume_mm3"] / voxel == pytest.approx(
            round(level["cord_volume_mm3"] / voxel))
    assert morph["quality"]["spine"]["consistent"] is True


def test_rootlets_are_imported_with_their_spinal_levels(automatic_run: Run,
                                                       data_dir: Path) -> None:
    run = automatic_run
    real = reorient(load_mask(data_dir / REFERENCE / f"{SUBJECT}_T2w_rootlets-deepseg.nii.gz"))
    ours = load_mask(run.path("rootlets"))
    assert np.array_equal(ours.data, real.data)
    sidecar = json.loads(sidecar_path(run.path("rootlets")).read_text())
    assert sorted(sidecar["SpinalLevels"]) == ["C3", "C4", "C5", "C6"]
    assert run.path("rootlets_lut").read_text().splitlines()[1:] == [
        "3\tC3", "4\tC4", "5\tC5", "6\tC6"]


def test_report_shows_spine_rootlets_and_the_registration_choice(automatic_run: Run) -> None:
    page = (automatic_run.out / f"{SUBJECT}.html").read_text()
    for text in ("Vertebrae, discs and canal", "Dorsal nerve rootlets", "primary registration",
                 "disc-based: no rootlet-based registration", "vertebra/disc consistency"):
        assert text in page, text
    for figure in ("spine", "rootlets"):
        png = derivative_path(automatic_run.out, "figure", automatic_run.source, figure=figure)
        assert png.is_file() and png.name in page, figure


def test_csa_in_pam50_dimensions_is_read_from_sct_per_level(automatic_run: Run) -> None:
    run = automatic_run
    summary = json.loads(derivative_path(run.out, "morphometrics_pam50_json", run.source,
                                         template="PAM50").read_text())
    assert summary["method"].endswith("sct_process_segmentation -normalize-PAM50 1")
    # the double wrote area 50 + level on every PAM50 slice of levels C2-C5 (discs 3-5)
    assert [(e["name"], e["csa_mean_mm2"], e["partial"]) for e in summary["levels"]] == [
        ("C2", 52.0, True), ("C3", 53.0, False), ("C4", 54.0, False), ("C5", 55.0, True)]
    assert summary["template_slices"] == 991
    assert summary["normative"] is None and "not installed" in summary["normative_note"]
    page = (run.out / f"{SUBJECT}.html").read_text()
    assert "CSA C3, PAM50 dimensions" in page


@pytest.fixture(scope="module")
def rootlet_template(pam50_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PAM50_small layout, its info_label.txt listing template rootlets (IDs 16, 17). The
    double never reads them; SCT's -lrootlet check only needs them listed and present."""
    root = tmp_path_factory.mktemp("pam50rootlets") / "PAM50"
    shutil.copytree(pam50_dir, root, symlinks=True)
    folder = root / "template"
    for name in ("PAM50_rootlets.nii.gz", "PAM50_label_rootlets.nii.gz"):
        (folder / name).symlink_to((folder / "PAM50_cord.nii.gz").resolve())
    (folder / "info_label.txt").write_text(
        "# Keyword=IndivLabels (Please DO NOT change this line)\n"
        "16, spinal rootlets, PAM50_rootlets.nii.gz\n"
        "17, spinal rootlets mid-points, PAM50_label_rootlets.nii.gz\n")
    return root


@pytest.fixture(scope="module")
def rootlet_run(sct_double: SctDouble, unlabelled_bids: Path, rootlet_template: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(sct_double, unlabelled_bids, tmp_path_factory.mktemp("rootlets") / "out",
                rootlet_template)


def test_both_registrations_run_and_the_rule_picks_the_primary(rootlet_run: Run,
                                                               rootlet_template: Path) -> None:
    from spinal_bidsapp.engines.registration import RegistrationScores
    from spinal_bidsapp.engines.sct.participant import choose_registration

    run = rootlet_run
    assert run.code == 0
    registrations = [argv for argv in run.calls if Path(argv[0]).name
                     == "sct_register_to_template"]
    assert registrations[1] == [registrations[1][0], *build_register_argv(
        SCT_PINNED_VERSION, image=run.path("anat_preproc"), cord_mask=run.path("cord_mask"),
        template_dir=rootlet_template, contrast="T2w",
        out_dir=run.work("register_rootlets") / "sct", rootlets=run.path("rootlets"))[1:]]
    assert "-ldisc" not in registrations[1]
    metrics = json.loads((run.work("register") / "registration_metrics.json").read_text())
    paths = metrics["paths"]
    assert sorted(paths) == ["discs", "rootlets"]
    chosen, reason = choose_registration(RegistrationScores.from_json(paths["discs"]),
                                         RegistrationScores.from_json(paths["rootlets"]),
                                         rootlet_levels=4)
    assert (metrics["labels"], metrics["selection"]) == (chosen, reason)
    other = "rootlets" if chosen == "discs" else "discs"
    for way in ("to", "from"):
        name = derivative_path(run.out, f"xfm_{way}_template_{other}", run.source,
                               template="PAM50")
        assert name.is_file(), name
        assert not derivative_path(run.out, f"xfm_{way}_template_{chosen}", run.source,
                                   template="PAM50").exists()
    assert html.escape(reason) in (run.out / f"{SUBJECT}.html").read_text()


def test_sct_engine_warps_apply_on_the_whole_grids(rootlet_run: Run,
                                                   rootlet_template: Path) -> None:
    """#18: both SCT-engine pairs (primary and the ``desc-`` alternate), applied by antspyx and
    SimpleITK on the whole grid of their reference image, give nothing of the moving image where
    they have no mapping and the app's own resampling elsewhere (the template->anat warp is SCT's
    real one, float32-max where ANTs had no value)."""
    from tests.warp_tools import check_warp, mapped

    run = rootlet_run
    pam50_cord = rootlet_template / "template" / "PAM50_cord.nii.gz"
    cord = run.path("cord_mask")
    check_warp(cord, pam50_cord, run.path("xfm_to_template"),
               own_output=run.path("cord_mask_in_template"))
    check_warp(pam50_cord, cord, run.path("xfm_from_template"),
               own_output=run.path("template_cord_native"))
    assert not mapped(run.path("xfm_from_template")).all()
    metrics = json.loads((run.work("register") / "registration_metrics.json").read_text())
    other = "rootlets" if metrics["labels"] == "discs" else "discs"
    for way, (moving, reference) in {"to": (cord, pam50_cord),
                                     "from": (pam50_cord, cord)}.items():
        check_warp(moving, reference, derivative_path(
            run.out, f"xfm_{way}_template_{other}", run.source, template="PAM50"))


def test_sct_outputs_are_imported_under_the_table_names_with_their_method(
        automatic_run: Run, data_dir: Path) -> None:
    run = automatic_run
    for kind in ("anat_preproc", "cord_mask", "centerline_mask", "discs", "discs_lut", "levels",
                 "morphometrics", "xfm_to_template", "xfm_from_template", "anat_in_template",
                 "cord_mask_in_template", "template_levels_native", "template_cord_native"):
        assert run.path(kind).is_file(), kind
    assert (run.out / f"{SUBJECT}.html").is_file()
    cord_sidecar = json.loads(sidecar_path(run.path("cord_mask")).read_text())
    assert cord_sidecar["Method"] == f"SCT {SCT_PINNED_VERSION} sct_deepseg spinalcord"
    discs_sidecar = json.loads(sidecar_path(run.path("discs")).read_text())
    assert discs_sidecar["Method"] == f"SCT {SCT_PINNED_VERSION} sct_deepseg spine"
    ref = data_dir / REFERENCE
    real_seg = reorient(load_mask(ref / f"{SUBJECT}_T2w_seg-deepseg2d.nii.gz"))
    ours = load_mask(run.path("cord_mask"))
    assert np.array_equal(ours.data, real_seg.data) and np.allclose(ours.affine, real_seg.affine)
    real_warp = load_field(ref / f"{SUBJECT}_T2w_warp-PAM50small2anat.nii.gz")
    from_template = load_field(run.path("xfm_from_template"))
    assert from_template.shape == ours.shape
    assert np.allclose(from_template.affine, ours.affine)
    assert np.array_equal(np.sort(from_template.data.reshape(-1)),
                          np.sort(real_warp.data.reshape(-1)), equal_nan=True)  # NaN: no mapping
    template_grid = nib.load(str(data_dir / "PAM50_small" / "PAM50_small_cord.nii.gz"))
    assert load_field(run.path("xfm_to_template")).shape == template_grid.shape
    morph = json.loads(run.path("morphometrics_json").read_text())
    assert morph["quality"]["cord_mask"] == {"source": "sct",
                                             "method": cord_sidecar["Method"]}


def test_engine_and_sct_version_enter_the_ledgers(automatic_run: Run, pam50_dir: Path,
                                                  tmp_path: Path) -> None:
    run = automatic_run
    engine = {"engine": "sct", "sct_version": str(SCT_PINNED_VERSION)}
    template = resolve_pam50(template_dir=pam50_dir, sct_dir=None, cache_dir=tmp_path,
                             allow_download=False, progress=False)
    registration = {**engine, **template.provenance(), "contrast": "T2w"}
    expected = {
        "segment": {**engine, "contrast": "T2w"},
        "spine": engine,
        "label_discs": {**engine, "first_disc": None, "last_disc": None},
        "rootlets": engine,
        "csa_pam50": {**engine, "normative": "None"},
        "register_discs": registration,
        "register": {**registration, "rootlets": False},
    }
    for step, params in expected.items():
        ledger = json.loads((run.work(step) / LEDGER_NAME).read_text())
        assert ledger["params"] == params_digest(params), step


def test_sct_outputs_are_a_valid_derivative_dataset(automatic_run: Run) -> None:
    proc = subprocess.run([str(find_validator()), str(automatic_run.out), "--format", "json"],
                          capture_output=True, text=True, check=False)
    issues = json.loads(proc.stdout)["issues"]["issues"]
    assert [(i["code"], i.get("location")) for i in issues if i["severity"] == "error"] == []
    names = {p.name for p in (automatic_run.out / SUBJECT / "anat").iterdir()}
    table = {derivative_path(automatic_run.out, kind, automatic_run.source,
                             template="PAM50", figure="x").name
             for kind, spec in OUTPUTS.items() if spec.datatype == "anat"}
    json_sidecars = {n for n in names if n.endswith(".json")}
    assert names - json_sidecars <= table


def test_registration_metrics_are_our_scorer_on_the_real_sct_warp(
        automatic_run: Run, data_dir: Path) -> None:
    from benchmarks.participant import score_sct_reference

    metrics = json.loads((automatic_run.work("register") / "registration_metrics.json")
                         .read_text())
    assert metrics["engine"] == "sct" and metrics["engine_version"] == str(SCT_PINNED_VERSION)
    # the discs of this run are SCT's (the double's, from sct-reference's labeled segmentation,
    # one level above the manual labels): the scorer gets the same ones
    discs = load_mask(automatic_run.path("discs"))
    template_discs = load_mask(data_dir / "PAM50_small" / "PAM50_small_label_disc.nii.gz")
    scorer = score_sct_reference(data_dir, discs_from_label_array(discs.data, discs.affine),
                                 discs_from_label_array(template_discs.data,
                                                        template_discs.affine))
    assert sorted(metrics["disc_error_mm"]) == sorted(str(d) for d in scorer["disc_errors"])
    for disc, errors in scorer["disc_errors"].items():
        assert metrics["disc_error_mm"][str(disc)]["to_template"] == pytest.approx(
            errors["to_template_mm"], abs=1e-3)
    assert metrics["cord_dice_native"] == pytest.approx(scorer["cord_dice_native"], abs=1e-3)


def test_manual_labels_win_and_never_go_through_sct(manual_run: Run, bids_real: Path) -> None:
    run = manual_run
    assert run.code == 0
    # manual discs: SCT's spine task (a deep-learning disc labelling) does not run; rootlets
    # are still segmented on the anatomy; the manual labels only go into the registration
    assert [(Path(argv[0]).name, argv[1]) for argv in run.calls] == [
        ("sct_deepseg", "rootlets"), ("sct_process_segmentation", "-i"),
        ("sct_register_to_template", "-i")]
    assert not any(str(bids_real) in arg for argv in run.calls[:1] for arg in argv)
    register = run.calls[2]
    assert register[register.index("-s") + 1] == str(run.path("cord_mask"))
    assert register[register.index("-ldisc") + 1] == str(run.path("discs"))
    manual = reorient(load_mask(bids_real / "derivatives" / "labels" / SUBJECT / "anat"
                                / f"{SUBJECT}_T2w_labels-disc.nii.gz"))
    assert np.array_equal(load_mask(run.path("discs")).data, manual.data)
    assert "Method" not in json.loads(sidecar_path(run.path("cord_mask")).read_text())


def test_engine_sct_without_sct_is_a_usage_error_with_the_install_hint(
        unlabelled_bids: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.delenv("SCT_DIR", raising=False)
    monkeypatch.setenv("PATH", str(empty) + os.pathsep + str(Path(sys.executable).parent))
    code = main([str(unlabelled_bids), str(tmp_path / "out"), "participant", "--engine", "sct",
                 "--skip-bids-validation"])
    assert code == 64
    err = capsys.readouterr().err
    assert INSTALL_HINT in err and "--engine builtin" in err


def test_rerun_with_the_same_sct_calls_no_sct_program(automatic_run: Run, sct_double: SctDouble,
                                                      pam50_dir: Path) -> None:
    again = _run(sct_double, automatic_run.bids, automatic_run.out, pam50_dir)
    assert again.code == 0 and again.calls == []
    log = latest_log_of(again)
    for step in ("segment", "spine", "label_discs", "rootlets", "csa_pam50", "register_discs",
                 "register"):
        assert f"{SUBJECT}: {step}: outputs are current, skipped" in log
