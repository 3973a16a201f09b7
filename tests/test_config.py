from __future__ import annotations

import json
from pathlib import Path

import pytest

from spinal_bidsapp.config import map_seed_configuration
from spinal_bidsapp.config.reading import build_config, read_config_file
from spinal_bidsapp.errors import ConfigError


def _base(tmp_path: Path) -> dict:
    return {"bids_dir": tmp_path / "bids", "output_dir": tmp_path / "out",
            "analysis_level": "participant"}


def test_participant_labels_lose_their_prefix(tmp_path: Path) -> None:
    cfg = build_config({**_base(tmp_path), "participant_label": ["sub-01", "02"]}, environ={})
    assert cfg.execution.participant_label == ["01", "02"]


@pytest.mark.parametrize("label", ["../x", "sub-01/../../etc", "a b", "01_x"])
def test_labels_with_path_characters_are_rejected(tmp_path: Path, label: str) -> None:
    with pytest.raises(ConfigError, match="invalid label"):
        build_config({**_base(tmp_path), "participant_label": [label]}, environ={})


def test_seed_configuration_maps_onto_options(tmp_path: Path) -> None:
    seed = {"path_data": str(tmp_path / "bids"), "include_list": "sub-01 sub-03",
            "data_type": "anat", "contrast": "t2", "suffix_image": "_T2w", "first_disc": 2,
            "last_disc": 8}
    path = tmp_path / "configuration.json"
    path.write_text(json.dumps(seed))
    cfg = build_config({"output_dir": tmp_path / "out", "analysis_level": "group"},
                       config_file=path, environ={})
    assert cfg.execution.bids_dir == tmp_path / "bids"
    assert cfg.execution.participant_label == ["01", "03"]
    assert cfg.participant.contrast == ["T2w"]
    assert (cfg.participant.first_disc, cfg.participant.last_disc) == (2, 8)


def test_seed_contrast_alone_gives_the_bids_suffix() -> None:
    assert map_seed_configuration({"contrast": "t1"}) == {"contrast": ["T1w"]}


def test_precedence_cli_over_environment_over_file(tmp_path: Path) -> None:
    path = tmp_path / "cfg.toml"
    path.write_text('[execution]\nnprocs = 3\n[participant]\nmin_cord_coverage_mm = 15\n'
                    'last_disc = 7\n')
    env = {"SPINAL_BIDSAPP_NPROCS": "5", "SPINAL_BIDSAPP_LAST_DISC": "9"}
    cfg = build_config({**_base(tmp_path), "last_disc": 6}, config_file=path, environ=env)
    assert cfg.execution.nprocs == 5
    assert cfg.participant.min_cord_coverage_mm == 15
    assert cfg.participant.last_disc == 6


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"nproc": 2}))
    with pytest.raises(ConfigError, match=r"'nproc' \(did you mean 'nprocs'\?\)"):
        read_config_file(path)


def test_mistyped_value_is_reported_readably(tmp_path: Path) -> None:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"nprocs": "many"}))
    with pytest.raises(ConfigError) as info:
        build_config(_base(tmp_path), config_file=path, environ={})
    message = str(info.value)
    assert "nprocs" in message and "'many'" in message and "Traceback" not in message


def test_saved_configuration_round_trips(tmp_path: Path) -> None:
    cfg = build_config({**_base(tmp_path), "participant_label": ["01"], "last_disc": 8},
                       environ={})
    path = tmp_path / "saved.json"
    path.write_text(cfg.to_json())
    again = build_config({}, config_file=path, environ={})
    assert again == cfg


def test_output_inside_input_dataset_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="inside the input dataset"):
        build_config({**_base(tmp_path), "output_dir": tmp_path / "bids" / "out"}, environ={})
    ok = build_config({**_base(tmp_path), "output_dir": tmp_path / "bids" / "derivatives" / "sb"},
                      environ={})
    assert ok.execution.output_dir.name == "sb"


def test_disc_range_must_be_ordered(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="first_disc"):
        build_config({**_base(tmp_path), "first_disc": 8, "last_disc": 3}, environ={})
