"""Shared fixtures: the read-only real data (checksummed per session) and tiny BIDS trees."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmarks.real_tools import tool_env

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPINAL_BIDSAPP_TEST_DATA", str(REPO.parent / "shared" / "data")))
TOOL_KITS = Path(os.environ.get("SPINAL_BIDSAPP_SHARED_TOOLS",
                               str(REPO.parent / "shared" / "tools")))
"""The offline installers of real SCT and MINC (``../shared/tools``)."""
REAL_TOOLS = Path(os.environ.get("SPINAL_BIDSAPP_REAL_TOOLS",
                                str(REPO / ".cache" / "real-tools")))
"""Where ``make real-tools`` installed them (``scripts/install-real-tools.sh``)."""


def real_tool_env(kind: str) -> dict[str, str]:
    """Environment in which the real ``kind`` tools ("sct" or "minc") run: this process's, plus
    the lines ``scripts/install-real-tools.sh`` wrote to ``REAL_TOOLS/<kind>.env``.

    Skips, with the reason, only where the tool kits are absent; where they exist but were not
    installed the test fails, so CI cannot pass by skipping the integration tier.
    """
    env_file = REAL_TOOLS / f"{kind}.env"
    if not env_file.is_file():
        if not (TOOL_KITS / kind).is_dir():
            pytest.skip(f"real {kind} tools: no kit at {TOOL_KITS / kind} "
                        "(set SPINAL_BIDSAPP_SHARED_TOOLS)")
        pytest.fail(f"real {kind} tools not installed in {REAL_TOOLS}: run `make real-tools` "
                    "(make test does it)")
    return tool_env(env_file)


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    """The shared real data (bids-real, PAM50, sct-reference); unchanged by the tests."""
    if not (DATA / "bids-real").is_dir():
        pytest.skip(f"shared test data not found at {DATA} (set SPINAL_BIDSAPP_TEST_DATA)")
    before = _tree_digest(DATA)
    yield DATA
    assert _tree_digest(DATA) == before, "a test modified the shared test data"


@pytest.fixture(scope="session")
def bids_real(data_dir: Path) -> Path:
    return data_dir / "bids-real"


@pytest.fixture(scope="session")
def pam50_dir(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """PAM50_small in SCT's layout (links renamed PAM50_*, with an info_label.txt)."""
    root = tmp_path_factory.mktemp("pam50") / "PAM50"
    folder = root / "template"
    folder.mkdir(parents=True)
    for path in (data_dir / "PAM50_small").glob("PAM50_small_*.nii.gz"):
        (folder / path.name.replace("PAM50_small_", "PAM50_")).symlink_to(path)
    (folder / "info_label.txt").write_text("# PAM50_small test layout\n")
    return root


def latest_log(out: Path, level: str) -> str:
    """Text of the newest ``<out>/logs/<level>_*.log`` (by time: names of runs started within the
    same second sort randomly)."""
    logs = (out / "logs").glob(f"{level}_*.log")
    return max(logs, key=lambda p: p.stat().st_mtime_ns).read_text()


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    return path


def make_bids(root: Path, subjects: dict[str, list[str]], *,
              shape: tuple[int, int, int] = (8, 8, 30), with_labels: bool = True) -> Path:
    """A tiny valid BIDS dataset: ``subjects`` maps labels to suffixes (e.g. {"01": ["T2w"]})."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": "tiny", "BIDSVersion": "1.10.0", "Authors": ["A", "B"], "License": "CC0"}))
    (root / "README").write_text("Tiny dataset for spinal_bidsapp tests.\n" * 20)
    rows = ["participant_id"] + [f"sub-{s}" for s in subjects]
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    rng = np.random.default_rng(0)
    for subject, suffixes in subjects.items():
        for suffix in suffixes:
            anat = root / f"sub-{subject}" / "anat"
            data = rng.normal(100, 10, shape).astype(np.float32)
            write_nifti(anat / f"sub-{subject}_{suffix}.nii.gz", data)
            (anat / f"sub-{subject}_{suffix}.json").write_text(json.dumps({
                "MagneticFieldStrength": 3, "Manufacturer": "Test"}))
            if with_labels:
                mask = np.zeros(shape, np.uint8)
                mask[3:5, 3:5, :] = 1
                labels = root / "derivatives" / "labels" / f"sub-{subject}" / "anat"
                write_nifti(labels / f"sub-{subject}_{suffix}_label-SC_mask.nii.gz", mask)
    if with_labels:
        (root / "derivatives" / "labels" / "dataset_description.json").write_text(json.dumps({
            "Name": "labels", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "Manual"}]}))
    return root


@pytest.fixture
def tiny_bids(tmp_path: Path) -> Path:
    return make_bids(tmp_path / "bids", {"01": ["T2w"], "02": ["T2w", "T1w"], "03": ["T1w"]})
