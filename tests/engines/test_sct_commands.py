"""SCT command lines per installed release (6.5, 7.0, 7.2, 7.3 = pinned), built without SCT."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinal_bidsapp.engines.base import (
    CordSegmenter,
    DiscLabeler,
    RootletSegmenter,
    TemplateRegistrar,
)
from spinal_bidsapp.engines.sct.commands import (
    SctEngine,
    build_label_discs_argv,
    build_process_segmentation_argv,
    build_register_argv,
    build_rootlets_argv,
    build_segment_cord_argv,
    build_spine_argv,
    check_sct_template,
)
from spinal_bidsapp.engines.sct.install import (
    SCT_PINNED_VERSION,
    SctInstall,
    SctVersion,
    disc_method_for,
    parse_sct_version,
)
from spinal_bidsapp.errors import EngineUnavailable, InputDataError, MissingInputError

V65, V70, V71, V72, V73 = (SctVersion(6, 5), SctVersion(7, 0), SctVersion(7, 1),
                           SctVersion(7, 2), SctVersion(7, 3))
IMG = Path("/w/t2.nii.gz")
SEG = Path("/w/t2_seg.nii.gz")
OUT = Path("/w/out")


def test_pinned_release_is_7_3() -> None:
    assert SCT_PINNED_VERSION == V73
    assert str(SCT_PINNED_VERSION) == "7.3"


@pytest.mark.parametrize(("text", "expected"), [
    ("7.3", V73), ("7.4.dev0", SctVersion(7, 4)), ("6.4.post1", SctVersion(6, 4)),
    ("  7.0\n", V70), ("v6.5", V65),
])
def test_parse_sct_version(text: str, expected: SctVersion) -> None:
    assert parse_sct_version(text) == expected


def test_parse_sct_version_rejects_git_descriptions() -> None:
    with pytest.raises(ValueError, match="git-master"):
        parse_sct_version("git-master-3b3c5b22")


def test_versions_order_numerically() -> None:
    assert SctVersion(6, 5) < SctVersion(7, 0) < SctVersion(7, 10)


@pytest.mark.parametrize("version", [V70, V72, V73, SCT_PINNED_VERSION])
def test_cord_segmentation_uses_deepseg_spinalcord_from_7_0(version: SctVersion) -> None:
    argv = build_segment_cord_argv(version, image=IMG, contrast="T1w", out=OUT / "seg.nii.gz")
    assert argv == ["sct_deepseg", "spinalcord", "-i", str(IMG), "-o", str(OUT / "seg.nii.gz")]


def test_cord_segmentation_before_7_0_is_legacy_deepseg_sc_with_contrast() -> None:
    argv = build_segment_cord_argv(V65, image=IMG, contrast="T2starw", out=OUT / "seg.nii.gz")
    assert argv == ["sct_deepseg_sc", "-i", str(IMG), "-c", "t2s", "-ofolder", str(OUT),
                    "-o", str(OUT / "seg.nii.gz")]


@pytest.mark.parametrize("version", [V72, V73, SCT_PINNED_VERSION])
def test_discs_use_the_spine_task_with_individual_vertebrae_from_7_2(version: SctVersion
                                                                     ) -> None:
    command = build_label_discs_argv(version, image=IMG, cord_mask=SEG, contrast="T2w",
                                     out_dir=OUT)
    # -label-vert 1: the second model, which names each vertebra (SCT 7.2 sct_deepseg.py)
    assert command.argv == ["sct_deepseg", "spine", "-i", str(IMG), "-o",
                            str(OUT / "spine.nii.gz"), "-label-vert", "1"]
    assert command.discs == OUT / "spine_totalspineseg_discs.nii.gz"
    assert command.outputs == (OUT / "spine_totalspineseg_discs.nii.gz",
                               OUT / "spine_totalspineseg_all.nii.gz")
    spine = build_spine_argv(version, image=IMG, out_dir=OUT)
    assert spine.argv == command.argv and spine.labels == OUT / "spine_totalspineseg_all.nii.gz"


@pytest.mark.parametrize("version", [V70, V71])
def test_discs_use_totalspineseg_step1_levels_in_7_0_and_7_1(version: SctVersion) -> None:
    command = build_label_discs_argv(version, image=IMG, cord_mask=SEG, contrast="T1w",
                                     out_dir=OUT)
    # no -step1-only: its default 0 runs step 2, which labels each vertebra (SCT 7.0)
    assert command.argv == ["sct_deepseg", "totalspineseg", "-i", str(IMG), "-o",
                            str(OUT / "tss.nii.gz")]
    assert command.discs == OUT / "tss_step1_levels.nii.gz"
    assert build_spine_argv(version, image=IMG, out_dir=OUT).labels == (
        OUT / "tss_step2_output.nii.gz")


def test_the_spine_task_needs_sct_7() -> None:
    with pytest.raises(EngineUnavailable, match=r"7\.0 or newer"):
        build_spine_argv(V65, image=IMG, out_dir=OUT)


@pytest.mark.parametrize(("version", "method"), [(V65, "auto"), (V73, "label_vertebrae")])
def test_discs_from_label_vertebrae_before_7_0_or_on_request(version: SctVersion,
                                                             method: str) -> None:
    command = build_label_discs_argv(version, image=IMG, cord_mask=SEG, contrast="T2w",
                                     out_dir=OUT, method=method)  # type: ignore[arg-type]
    assert command.argv == ["sct_label_vertebrae", "-i", str(IMG), "-s", str(SEG), "-c", "t2",
                            "-ofolder", str(OUT)]
    assert command.discs == OUT / "t2_seg_labeled_discs.nii.gz"
    assert command.outputs == (OUT / "t2_seg_labeled_discs.nii.gz",
                               OUT / "t2_seg_labeled.nii.gz")


def test_label_vertebrae_refuses_t2star() -> None:
    with pytest.raises(InputDataError, match="T2starw"):
        build_label_discs_argv(V65, image=IMG, cord_mask=SEG, contrast="T2starw", out_dir=OUT)


def test_deepseg_discs_cannot_be_forced_before_7_0() -> None:
    with pytest.raises(EngineUnavailable, match=r"7\.0 or newer"):
        disc_method_for(V65, "deepseg")
    assert disc_method_for(V73, "deepseg") == "spine"


@pytest.mark.parametrize(("version", "task"), [
    (V65, ["-task", "seg_spinal_rootlets_t2w"]), (V70, ["rootlets"]), (V72, ["rootlets"]),
    (V73, ["rootlets"]),
])
def test_rootlets_task_name_per_version(version: SctVersion, task: list[str]) -> None:
    argv = build_rootlets_argv(version, image=IMG, out=OUT / "rootlets.nii.gz")
    assert argv == ["sct_deepseg", *task, "-i", str(IMG), "-o", str(OUT / "rootlets.nii.gz")]


@pytest.mark.parametrize("version", [V65, V70, V72, V73])
def test_registration_with_discs(version: SctVersion) -> None:
    argv = build_register_argv(version, image=IMG, cord_mask=SEG, template_dir=Path("/PAM50"),
                               contrast="T1w", out_dir=OUT, discs=Path("/w/discs.nii.gz"))
    assert argv == ["sct_register_to_template", "-i", str(IMG), "-s", str(SEG),
                    "-ldisc", "/w/discs.nii.gz", "-c", "t1", "-t", "/PAM50", "-ofolder", str(OUT)]


def test_registration_with_rootlets_replaces_discs() -> None:
    argv = build_register_argv(V73, image=IMG, cord_mask=SEG, template_dir=Path("/PAM50"),
                               contrast="T2w", out_dir=OUT, rootlets=Path("/w/r.nii.gz"))
    assert "-lrootlet" in argv and "-ldisc" not in argv
    with pytest.raises(EngineUnavailable, match=r"7\.0 or newer"):
        build_register_argv(V65, image=IMG, cord_mask=SEG, template_dir=Path("/PAM50"),
                            contrast="T2w", out_dir=OUT, rootlets=Path("/w/r.nii.gz"))
    with pytest.raises(ValueError, match="exactly one"):
        build_register_argv(V73, image=IMG, cord_mask=SEG, template_dir=Path("/PAM50"),
                            contrast="T2w", out_dir=OUT, discs=Path("/d"), rootlets=Path("/r"))


def test_morphometry_per_level_and_per_slice() -> None:
    csv = OUT / "csa.csv"
    per_level = build_process_segmentation_argv(V73, cord_mask=SEG, discs=Path("/d.nii.gz"),
                                                out_csv=csv, per="level")
    assert per_level == ["sct_process_segmentation", "-i", str(SEG), "-discfile", "/d.nii.gz",
                         "-o", str(csv), "-vert", "1:30", "-perlevel", "1"]
    normalized = build_process_segmentation_argv(V72, cord_mask=SEG, discs=Path("/d.nii.gz"),
                                                 out_csv=csv, per="slice", normalize_pam50=True)
    assert normalized[-4:] == ["-perslice", "1", "-normalize-PAM50", "1"]
    with pytest.raises(ValueError, match="perslice"):
        build_process_segmentation_argv(V73, cord_mask=SEG, discs=Path("/d"), out_csv=csv,
                                        per="level", normalize_pam50=True)


@pytest.mark.parametrize("version", [V65, V70])
def test_morphometry_needs_discfile_support(version: SctVersion) -> None:
    with pytest.raises(EngineUnavailable, match=r"7\.1 or newer"):
        build_process_segmentation_argv(version, cord_mask=SEG, discs=Path("/d"),
                                        out_csv=OUT / "c.csv", per="level")


def test_template_check_names_missing_files(tmp_path: Path) -> None:
    (tmp_path / "template").mkdir()
    (tmp_path / "template" / "PAM50_cord.nii.gz").write_bytes(b"")
    with pytest.raises(MissingInputError) as excinfo:
        check_sct_template(tmp_path, contrast="T2starw")
    message = str(excinfo.value)
    assert "info_label.txt" in message and "PAM50_t2s.nii.gz" in message
    assert "PAM50_cord.nii.gz" not in message


def test_engine_implements_the_protocols(tmp_path: Path) -> None:
    engine = SctEngine(SctInstall(bin_dir=tmp_path, version=V73, version_text="7.3"), threads=2)
    segmenter: CordSegmenter = engine
    labeler: DiscLabeler = engine
    registrar: TemplateRegistrar = engine
    rootlets: RootletSegmenter = engine
    assert segmenter.info.name == labeler.info.name == registrar.info.name == "sct"
    assert rootlets.info.version == "7.3"


def test_engine_refuses_unsupported_disc_method_at_construction(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable):
        SctEngine(SctInstall(bin_dir=tmp_path, version=V65, version_text="6.5"), threads=1,
                  disc_method="deepseg")
