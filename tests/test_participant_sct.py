"""The SCT engine path of the participant level, end to end, against a wiring double of SCT.

SCT is not installed here, so the "SCT installation" built by these tests (``$SCT_DIR/bin`` with
``sct_deepseg``, ``sct_label_vertebrae``, ``sct_register_to_template``,
``sct_process_segmentation``, ``sct_version`` and ``$SCT_DIR/version.txt`` = 7.3) is a **test
double for the wiring only**. Each program records its argv, then writes the files SCT would
write, taken from **real SCT outputs** of sub-errsm30 T2w in ``sct-reference/``:

* ``sct_deepseg spinalcord -i IMG -o OUT``: SCT's deepseg segmentation (``_seg-deepseg2d``), put on
  the grid of ``IMG`` by permuting and flipping axes (no resampling), as SCT writes its outputs;
* ``sct_deepseg spine -i IMG -o D/spine.nii.gz``: ``D/spine_totalspineseg_discs.nii.gz``, disc
  labels placed between the levels of SCT's labeled segmentation (``_seg-manual_labeled``, via
  ``write_discs_from_labeled_segmentation``), and ``D/spine_totalspineseg_all.nii.gz``, that
  labeled segmentation; both on the grid of ``IMG``;
* ``sct_register_to_template ... -ofolder D``: ``D/warp_template2anat.nii.gz`` is SCT's real
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
from spinal_bidsapp.cli import main
from spinal_bidsapp.engines.sct import (
    INSTALL_HINT,
    SCT_PINNED_VERSION,
    build_label_discs_argv,
    build_register_argv,
    build_segment_cord_argv,
)
from spinal_bidsapp.fieldio import load_field
from spinal_bidsapp.geometry.discs import discs_from_label_array
from spinal_bidsapp.image import load_mask, reorient
from spinal_bidsapp.steps import LEDGER_NAME, params_digest
from spinal_bidsapp.templates import resolve_pam50

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


def _inverse_warp(warp: Path, template_dir: Path, cache: Path) -> Path:
    """The real template->anat warp inverted onto the template grid (computed once)."""
    if not cache.is_file():
        from spinal_bidsapp.fieldio import save_field
        from spinal_bidsapp.geometry.fields import invert_field

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
        from spinal_bidsapp.engines.sct_outputs import write_discs_from_labeled_segmentation

        out, labeled = _option(argv, "-o"), ref / f"{SUBJECT}_T2w_seg-manual_labeled.nii.gz"
        stem = out.name.removesuffix(".nii.gz")
        native = out.with_name(f"{stem}_native_discs.nii.gz")
        write_discs_from_labeled_segmentation(labeled, native)
        _onto_grid_of(native, _option(argv, "-i"), out.with_name(f"{stem}_totalspineseg_discs"
                                                                 ".nii.gz"))
        _onto_grid_of(labeled, _option(argv, "-i"), out.with_name(f"{stem}_totalspineseg_all"
                                                                  ".nii.gz"))
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
        build_label_discs_argv(version, image=anat, cord_mask=cord, contrast="T2w",
                               out_dir=run.work("label_discs") / "sct").argv,
        build_register_argv(version, image=anat, cord_mask=cord, template_dir=pam50_dir,
                            contrast="T2w", out_dir=run.work("register") / "sct", discs=discs),
    ]
    assert run.calls == [[sct_double.program(argv[0]), *argv[1:]] for argv in expected]
    segment, label, register = run.calls
    assert segment[1:3] == ["spinalcord", "-i"] and label[1] == "spine"
    assert register[register.index("-c") + 1] == "t2"
    assert register[register.index("-t") + 1] == str(pam50_dir)


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
                          np.sort(real_warp.data.reshape(-1)))
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
    expected = {
        "segment": {**engine, "contrast": "T2w"},
        "label_discs": {**engine, "contrast": "T2w", "first_disc": None, "last_disc": None},
        "register": {**engine, **template.provenance(), "contrast": "T2w"},
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
    labels = data_dir / "bids-real" / "derivatives" / "labels" / SUBJECT / "anat"
    manual = load_mask(labels / f"{SUBJECT}_T2w_labels-disc.nii.gz")
    template_discs = load_mask(data_dir / "PAM50_small" / "PAM50_small_label_disc.nii.gz")
    scorer = score_sct_reference(data_dir, discs_from_label_array(manual.data, manual.affine),
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
    assert [Path(argv[0]).name for argv in run.calls] == ["sct_register_to_template"]
    register = run.calls[0]
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
    from tests.conftest import latest_log  # not at module level: the SCT double imports us

    log = latest_log(automatic_run.out, "participant")
    for step in ("segment", "label_discs", "register"):
        assert f"{SUBJECT}: {step}: outputs are current, skipped" in log
