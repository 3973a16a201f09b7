"""Container and platform files that can be checked without Docker (issue #6).

Dockerfile lint (hadolint), pinned versions that must agree across the Dockerfile, the Apptainer
definition, the docs and the package, the Boutiques descriptor (real ``bosh``), and the
brainlife.io ``main`` run for real with the builtin engine. Building and running the image itself
happens only in the container CI (``scripts/container-smoke.sh``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp import __version__
from spinal_bidsapp.cli.boutiques import ERROR_CODES, container_image, descriptor
from spinal_bidsapp.cli.main import main
from spinal_bidsapp.cli.parser import build_parser
from spinal_bidsapp.engines.minc import NIST_MNI_PIPELINES_COMMIT
from spinal_bidsapp.engines.sct.commands import (
    build_label_discs_argv,
    build_rootlets_argv,
    build_segment_cord_argv,
)
from spinal_bidsapp.engines.sct.install import SCT_PINNED_VERSION
from spinal_bidsapp.errors import SpinalBidsAppError
from spinal_bidsapp.templates.pam50 import PAM50_RELEASE, resolve_pam50

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    """An executable installed next to this Python (the venv), else from PATH."""
    beside = BIN / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not installed: pip install -e '.[test]'")
    return found


def _dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), flags=re.MULTILINE))


# --- Dockerfile -------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([_tool("hadolint"), "--no-color", "Dockerfile"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    findings = result.stdout + result.stderr
    assert result.returncode == 0, findings
    assert not re.search(r"\b(warning|error)\b", findings), findings


def test_hadolint_ignores_are_documented() -> None:
    lines = (REPO / ".hadolint.yaml").read_text().splitlines()
    ignored = [i for i, line in enumerate(lines) if re.match(r"\s+- DL\d+", line)]
    assert ignored
    for i in ignored:
        assert lines[i - 1].lstrip().startswith("#"), f"no reason given for {lines[i].strip()}"


def test_pinned_versions_agree() -> None:
    args = _dockerfile_args()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert args["SPINAL_BIDSAPP_VERSION"] == __version__ == pyproject["project"]["version"]
    assert args["SCT_VERSION"] == str(SCT_PINNED_VERSION)
    assert args["NIST_MNI_PIPELINES_COMMIT"] == NIST_MNI_PIPELINES_COMMIT
    assert args["PAM50_RELEASE"] == PAM50_RELEASE
    image = container_image()
    assert args["SPINAL_BIDSAPP_CONTAINER_TAG"] == (
        image.rsplit(":", 1)[0] + ":${SPINAL_BIDSAPP_VERSION}")

    definition = (REPO / "Singularity.def").read_text()
    assert re.search(rf"^From: {re.escape(image)}$", definition, flags=re.MULTILINE)
    assert f"SPINAL_BIDSAPP_CONTAINER_TAG={image}" in definition
    assert f"docker://{image}" in (REPO / "main").read_text()

    docs = {name: (REPO / "docs" / name).read_text()
            for name in ("installation.md", "hpc.md", "engines.md")}
    for name in ("installation.md", "hpc.md"):
        assert image in docs[name], name
    installation = docs["installation.md"]
    for value in (f"SCT {SCT_PINNED_VERSION}", f"minc-toolkit-v2 {args['MINC_VERSION']}",
                  NIST_MNI_PIPELINES_COMMIT[:8], PAM50_RELEASE, args["MINC2_SIMPLE_VERSION"],
                  f"scoop {args['SCOOP_VERSION']}"):
        assert value in installation, value
    assert f"SCT {SCT_PINNED_VERSION}" in docs["engines.md"]


def test_dockerfile_installs_the_models_the_sct_engine_runs() -> None:
    version, path = SCT_PINNED_VERSION, Path("x.nii.gz")
    commands = [build_segment_cord_argv(version, image=path, contrast="T2w", out=path),
                build_label_discs_argv(version, image=path, cord_mask=path, contrast="T2w",
                                       out_dir=Path("d")).argv,
                build_rootlets_argv(version, image=path, out=path)]
    tasks = {argv[1] for argv in commands if argv[0] == "sct_deepseg"}
    assert set(_dockerfile_args()["SCT_DEEPSEG_TASKS"].split(",")) == tasks


def test_dockerfile_pam50_step_fills_the_cache(tmp_path: Path) -> None:
    """The Dockerfile's own PAM50 command, run on a small archive shaped like the release."""
    program = re.search(r"RUN python -c '([^']*install_pam50_archive[^']*)'",
                        DOCKERFILE.read_text())
    assert program is not None
    release = tmp_path / "PAM50-release"
    (release / "template").mkdir(parents=True)
    for name in ("PAM50_cord.nii.gz", "PAM50_label_disc.nii.gz", "PAM50_t2.nii.gz"):
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)),
                 str(release / "template" / name))
    archive = tmp_path / "PAM50.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(release.rglob("*")):
            zf.write(path, Path("PAM50") / path.relative_to(release))
    cache = tmp_path / "cache"
    subprocess.run([sys.executable, "-c", program.group(1), str(archive), str(cache)],
                   check=True, timeout=60)
    manifest = json.loads((cache / "pam50-manifest.json").read_text())
    assert manifest["release"] == PAM50_RELEASE and len(manifest["sha256"]) == 64
    pam50 = resolve_pam50(template_dir=None, sct_dir=None, cache_dir=cache,
                          allow_download=False, progress=False)
    assert pam50.source == "cache" and pam50.version == PAM50_RELEASE


def test_inline_python_of_the_container_files_compiles() -> None:
    """Every ``python -c '...'`` program in the Dockerfile and Singularity.def is valid Python."""
    programs = []
    for name in ("Dockerfile", "Singularity.def"):
        programs += re.findall(r"python -c '([^']+)'", (REPO / name).read_text())
    assert len(programs) >= 8
    for program in programs:
        compile(program, "<container file>", "exec")


def test_shell_scripts_parse() -> None:
    for script in (REPO / "main", REPO / "scripts" / "container-smoke.sh"):
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
        assert os.access(script, os.X_OK), f"{script.name} is not executable"


# --- Boutiques --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def descriptor_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("boutiques") / "spinal_bidsapp.json"
    path.write_text(json.dumps(descriptor(), indent=2))
    return path


def test_descriptor_validates_with_bosh(descriptor_file: Path) -> None:
    for extra in ([], ["--bids"]):
        result = subprocess.run([_tool("bosh"), "validate", *extra, str(descriptor_file)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


def test_descriptor_lists_every_option() -> None:
    found = descriptor()
    flags = {entry.get("command-line-flag") for entry in found["inputs"]}
    for action in build_parser()._actions:
        if action.option_strings and action.dest not in {"help", "version", "bids_exec_spec"}:
            assert set(action.option_strings) & flags, f"{action.option_strings} missing"
    assert found["tool-version"] == __version__
    assert found["container-image"] == {"type": "docker", "image": container_image()}
    assert "BIDSAppSpecVersion" in found["custom"]
    codes = {cls.exit_code for cls in _error_classes()}
    assert codes <= set(ERROR_CODES), codes - set(ERROR_CODES)


def _error_classes() -> list[type[SpinalBidsAppError]]:
    pending, seen = [SpinalBidsAppError], []
    while pending:
        cls = pending.pop()
        seen.append(cls)
        pending.extend(cls.__subclasses__())
    return seen


def test_descriptor_invocation_parses_back(descriptor_file: Path, tmp_path: Path) -> None:
    """``bosh exec simulate`` builds a command line that our own parser reads as intended."""
    invocation = {
        "bids_dir": "/data", "output_dir_name": "/out", "analysis_level": "participant",
        "participant_label": ["01", "02"], "session_label": ["1"], "engine": "builtin",
        "nprocs": 2, "template_resolution_mm": 0.5, "no_symmetric": True,
        "skip_bids_validation": True, "derivatives": ["labels=/labels"], "work_dir": "/work",
        "contrast": ["T2w", "T1w"],
    }
    (tmp_path / "invocation.json").write_text(json.dumps(invocation))
    result = subprocess.run([_tool("bosh"), "exec", "simulate", str(descriptor_file),
                             "-i", str(tmp_path / "invocation.json")],
                            capture_output=True, text=True, timeout=120, check=True)
    line = next(text for text in result.stdout.splitlines() if "spinal_bidsapp " in text)
    mkdir, command = line.split(";", 1)
    assert mkdir.strip() == "mkdir -p /out"
    argv = shlex.split(command)
    assert argv[0] == "spinal_bidsapp"
    parsed = vars(build_parser().parse_args(argv[1:]))
    assert parsed == {
        "bids_dir": Path("/data"), "output_dir": Path("/out"), "analysis_level": "participant",
        "participant_label": ["01", "02"], "session_label": ["1"], "engine": "builtin",
        "nprocs": 2, "template_resolution_mm": 0.5, "template_symmetric": False,
        "skip_bids_validation": True, "derivatives": [("labels", Path("/labels"))],
        "work_dir": Path("/work"), "contrast": ["T2w", "T1w"],
    }


def test_bids_exec_spec_prints_the_descriptor(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--bids-exec-spec"]) == 0
    assert json.loads(capsys.readouterr().out) == descriptor()


# --- brainlife.io -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo_bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spinal_bidsapp.synth import generate_demo_cohort

    return generate_demo_cohort(tmp_path_factory.mktemp("demo"), n_subjects=2, seed=0).bids_dir


def _run_main(folder: Path, config: dict[str, object]) -> subprocess.CompletedProcess[str]:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", str(REPO / "main")], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)


def test_brainlife_main_runs_a_bids_dataset(demo_bids: Path, tmp_path: Path) -> None:
    result = _run_main(tmp_path / "task", {
        "bids": str(demo_bids), "participant_label": "01", "engine": "builtin", "nprocs": 1,
        "_inputs": [{"meta": {"subject": "ignored"}}]})
    assert result.returncode == 0, result.stderr[-2000:]
    task = tmp_path / "task"
    product = json.loads((task / "product.json").read_text())
    assert product["brainlife"][0] == {"type": "success", "msg": "spinal_bidsapp finished"}
    metrics = product["subjects"]["sub-01"]
    assert 50 < metrics["cord_length_mm"] < 500 and metrics["csa_mean_mm2"] > 0
    assert any(m["type"] == "plotly" for m in product["brainlife"])
    assert (task / "output" / "sub-01" / "anat" / "sub-01_label-SC_mask.nii.gz").is_file()
    assert not (task / "output" / "sub-02").exists()
    assert (task / "mask" / "mask.nii.gz").is_file()
    assert len(json.dumps(product)) < 10_000


def test_brainlife_main_builds_bids_from_one_image(demo_bids: Path, tmp_path: Path) -> None:
    labels = demo_bids / "derivatives" / "labels" / "sub-02" / "anat"
    result = _run_main(tmp_path / "task", {
        "t2w": str(demo_bids / "sub-02" / "anat" / "sub-02_T2w.nii.gz"),
        "cord_mask": str(labels / "sub-02_T2w_label-SC_mask.nii.gz"),
        "discs": str(labels / "sub-02_T2w_labels-disc.nii.gz"),
        "engine": "builtin", "nprocs": 1, "skip_bids_validation": True,
        "_inputs": [{"meta": {"subject": "sub-07"}}]})
    assert result.returncode == 0, result.stderr[-2000:]
    task = tmp_path / "task"
    assert (task / "bids" / "sub-07" / "anat" / "sub-07_T2w.nii.gz").is_file()
    assert "sub-07" in json.loads((task / "product.json").read_text())["subjects"]
    assert (task / "mask" / "mask.nii.gz").is_file()


def test_brainlife_main_rejects_unknown_keys(tmp_path: Path) -> None:
    result = _run_main(tmp_path / "task", {"bids": "/nowhere", "colour": "red"})
    assert result.returncode == 64
    product = json.loads((tmp_path / "task" / "product.json").read_text())
    assert product["brainlife"][0]["type"] == "error"
    assert "colour" in product["brainlife"][0]["msg"]
