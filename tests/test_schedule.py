"""Fusion schedules: the RECALL softmax, presets, validation messages, JSON round trip."""
import json

import numpy as np
import pytest

from recall_core.errors import ScheduleError
from recall_core.schedule import (Schedule, check_matches, linear_ramp_schedule, parse_cells, recall_schedule,
                                  reference_above_schedule, uniform_schedule, validate)

MODELS = ["a", "b", "ref"]


def test_recall_schedule_is_softmax_of_similarity_over_temperature():
    sim = np.array([[1.0, 0.9, 0.5, 0.2],
                    [1.0, 0.8, 0.4, 0.1],
                    [1.0, 1.0, 1.0, 1.0]])  # 3 blocks -> 4 hidden-state indices
    sched = recall_schedule(sim, MODELS, temperature=0.1)
    assert sched.rows == ["embed", "block_0", "block_1", "block_2", "head"]
    np.testing.assert_allclose(sched.weights.sum(axis=1), 1)
    for row, l in zip(sched.rows, [0, 1, 2, 3, 3]):
        expected = np.exp(sim[:, l] / 0.1) / np.exp(sim[:, l] / 0.1).sum()
        np.testing.assert_allclose(sched.row(row), expected)
    # where models agree the row is uniform; deep rows lean to the reference
    np.testing.assert_allclose(sched.row("embed"), 1 / 3)
    assert sched.row("head")[2] > 0.9
    # a high temperature flattens the schedule
    assert recall_schedule(sim, MODELS, 100).spread().max() < 1.02 < sched.spread().max()
    with pytest.raises(ScheduleError, match="temperature"):
        recall_schedule(sim, MODELS, 0)


def test_presets():
    u = uniform_schedule(MODELS, 4)
    np.testing.assert_allclose(u.weights, 1 / 3)
    ramp = linear_ramp_schedule(MODELS, 4, "ref")
    np.testing.assert_allclose(ramp.row("embed"), 1 / 3)
    np.testing.assert_allclose(ramp.row("head"), [0, 0, 1])
    assert np.all(np.diff(ramp.weights[:, 2]) > 0)
    above = reference_above_schedule(MODELS, 4, "ref", k=2)
    np.testing.assert_allclose(above.row("block_1"), 1 / 3)
    np.testing.assert_allclose(above.row("block_2"), [0, 0, 1])
    np.testing.assert_allclose(above.row("head"), [0, 0, 1])
    with pytest.raises(ScheduleError, match="reference"):
        linear_ramp_schedule(MODELS, 4, "zzz")
    with pytest.raises(ScheduleError, match="k must"):
        reference_above_schedule(MODELS, 4, "ref", k=9)


def test_validation_names_row_and_model_and_renormalises():
    rows = uniform_schedule(MODELS, 1).rows
    edited = parse_cells(rows, MODELS, [["1", "1", "2"], [0.5, 0.5, 0], ["0", "0", "3"]])
    np.testing.assert_allclose(edited.row("embed"), [0.25, 0.25, 0.5])
    np.testing.assert_allclose(edited.row("head"), [0, 0, 1])
    cases = [
        ([["1", "x", "1"], [1, 1, 1], [1, 1, 1]], r"row embed, model b: 'x' is not a number"),
        ([[1, 1, 1], [1, -1, 1], [1, 1, 1]], r"row block_0, model b: weight must not be negative"),
        ([[1, 1, 1], [1, 1, 1], [1, "nan", 1]], r"row head, model b: weight must be a finite number"),
        ([[1, 1, 1], [0, 0, 0], [1, 1, 1]], r"row block_0: weights sum to 0"),
        ([[1, 1, 1], [1, 1, 1]], r"the table has 2 rows; expected 3"),
        ([[1, 1], [1, 1, 1], [1, 1, 1]], r"row embed: 2 values for 3 models"),
    ]
    for cells, message in cases:
        with pytest.raises(ScheduleError, match=message):
            parse_cells(rows, MODELS, cells)
    with pytest.raises(ScheduleError, match="negative"):
        validate(Schedule(rows, MODELS, [[1, 1, 1], [1, 1, -0.1], [1, 1, 1]]))


def test_json_round_trip_loses_nothing():
    sim = np.random.default_rng(0).uniform(0.5, 1, size=(3, 6))
    sched = recall_schedule(sim, MODELS, temperature=0.037)
    sched.settings["metric"] = "rbf"
    back = Schedule.from_json(sched.to_json())
    assert back.rows == sched.rows and back.models == sched.models
    assert back.source == sched.source and back.settings == sched.settings
    np.testing.assert_array_equal(back.weights, sched.weights)  # exact: floats survive JSON
    with pytest.raises(ScheduleError, match="JSON"):
        Schedule.from_json("{not json")
    broken = json.loads(sched.to_json())
    broken["weights"][2][1] = -1
    with pytest.raises(ScheduleError, match="row block_1, model b"):
        Schedule.from_dict(broken)


def test_check_matches():
    sched = uniform_schedule(MODELS, 3)
    check_matches(sched, MODELS, 3)
    with pytest.raises(ScheduleError, match="5 rows but the models have 4 blocks"):
        check_matches(sched, MODELS, 4)
    with pytest.raises(ScheduleError, match="do not match"):
        check_matches(sched, ["a", "ref"], 3)
