"""``--engine auto``: the choice between SCT's registration and the builtin one (#19), and how
the report shows it."""

from __future__ import annotations

from spinal_bidsapp.engines.registration import RegistrationScores, choose_engine_registration
from spinal_bidsapp.participant.report import _registration_rows


def _scores(template: float, native: float, *unmapped: str) -> RegistrationScores:
    errors: dict[str, dict[str, float | None]] = {
        disc: {"to_template": 0.5, "to_anat": 0.7} for disc in ("3", "4", "5", "6")}
    for disc in unmapped:
        errors[disc] = {"to_template": 0.5, "to_anat": None}
    return RegistrationScores(cord_dice_in_template=template, cord_dice_native=native,
                              disc_error_mm=errors)


def test_fewer_unmapped_discs_win_before_any_dice() -> None:
    sct, builtin = _scores(0.99, 0.99, "3"), _scores(0.80, 0.80)
    assert choose_engine_registration(sct, builtin)[0] == "builtin"
    assert choose_engine_registration(builtin, _scores(0.99, 0.99, "3", "6"))[0] == "sct"


def test_then_the_mean_of_the_two_cord_dice_and_a_tie_keeps_sct() -> None:
    # les01-like: SCT better in PAM50 space, much worse in native space
    chosen, reason = choose_engine_registration(_scores(0.945, 0.807), _scores(0.976, 0.950))
    assert chosen == "builtin" and reason == ("builtin: mean cord Dice 0.963, SCT (disc-based) "
                                              "0.876")
    # SCT a little worse in one space, better on the mean: SCT
    assert choose_engine_registration(_scores(0.95, 0.99), _scores(0.97, 0.90))[0] == "sct"
    chosen, reason = choose_engine_registration(_scores(0.9, 0.8), _scores(0.8, 0.9),
                                                sct_labels="rootlets")
    assert chosen == "sct" and reason.startswith("SCT (rootlet-based)")
    assert reason.endswith("(a tie keeps SCT)")


def test_the_report_shows_the_engine_choice_and_every_candidate() -> None:
    sct, builtin = _scores(0.967, 0.721, "4"), _scores(0.983, 0.977)
    chosen, why = choose_engine_registration(sct, builtin)
    record = {**builtin.to_json(), "primary": chosen, "labels": "discs", "selection": why,
              "sct_selection": "disc-based: no rootlet-based registration",
              "paths": {"discs": sct.to_json(), "builtin": builtin.to_json()}}
    rows = {row.name: row for row in _registration_rows(record)}
    assert rows["primary registration"].value == "builtin"
    assert rows["primary registration"].note == why
    assert rows["SCT's registration"].value == "disc-based"
    assert "no mapping at disc(s) 4" in rows["SCT discs-based registration: cord Dice in PAM50 "
                                             "space"].note
    assert rows["builtin registration: cord Dice in PAM50 space"].value == 0.983
