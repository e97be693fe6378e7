"""Overlapped windows for long inputs (runtime/windows.py): exact slicing, seams, equal-length calls."""

from __future__ import annotations

import numpy as np
import pytest

from rvc_compile.runtime.windows import WindowPlan, run_windowed, slice_inputs

HOP = 4


def pointwise(feed):
    """A 'graph' whose output at each sample depends only on that sample's inputs: windows must be exact."""
    frames = feed["features"].shape[1]
    per_frame = feed["features"][0].sum(axis=1) + feed["prior_noise"][0].sum(axis=0)
    return (np.repeat(per_frame, HOP) + feed["excitation"][0])[None].astype(np.float32)


def make_feed(frames, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "features": rng.standard_normal((1, frames, 3)).astype(np.float32),
        "prior_noise": rng.standard_normal((1, 2, frames)).astype(np.float32),
        "excitation": rng.standard_normal((1, frames * HOP)).astype(np.float32),
        "speaker": np.array([0]),
    }


@pytest.mark.parametrize("total", [1, 37, 50, 51, 99, 100, 101, 333, 1000])
def test_spans_cover_the_input_with_full_windows_and_a_short_last_one(total):
    plan = WindowPlan(frames=50, context=6, crossfade=4)
    spans = plan.spans(total, min_frames=10)
    if total <= 50:
        assert spans == [(0, total, 0, total)]
        return
    assert spans[0][2] == 0 and spans[-1][3] == total
    assert all(end - start == 50 for start, end, _, _ in spans[:-1]), "full windows: the statically compiled length"
    assert 10 <= spans[-1][1] - spans[-1][0] <= 50
    for (start, end, kept_start, kept_end), following in zip(spans, spans[1:] + [None]):
        assert start <= kept_start < kept_end <= end
        assert kept_start == 0 or kept_start - start >= plan.context, "a kept region never starts at a cut"
        assert kept_end == total or end - kept_end >= plan.context, "nor ends at one"
        if following is not None:
            assert following[2] == kept_end - plan.crossfade, "adjacent windows overlap by the crossfade"
    computed = sum(end - start for start, end, _, _ in spans)
    assert computed <= total + len(spans) * (2 * plan.context + plan.crossfade), "work is the input plus the overlaps"


def test_three_windows_of_work_take_three_windows_plus_a_sliver():
    spans = WindowPlan(frames=1000, context=8, crossfade=4).spans(3000, min_frames=10)
    assert [end - start for start, end, _, _ in spans] == [1000, 1000, 1000, 60]


def test_windowed_run_is_exact_for_a_pointwise_graph_and_uses_bounded_calls():
    feed = make_feed(777)
    calls = []

    def run(window_feed):
        calls.append(window_feed["features"].shape[1])
        return pointwise(window_feed)

    out = run_windowed(run, feed, WindowPlan(frames=64, context=8, crossfade=4), HOP, min_frames=5)
    np.testing.assert_allclose(out, pointwise(feed).reshape(-1), rtol=0, atol=1e-5)
    assert len(calls) > 10 and set(calls[:-1]) == {64} and 5 <= calls[-1] <= 64


def test_crossfade_blends_two_windows_linearly():
    feed = make_feed(200)
    plan = WindowPlan(frames=60, context=5, crossfade=10)
    offsets = iter(range(100))

    def run(window_feed):  # each window outputs a constant: its index
        index = next(offsets)
        return np.full((1, window_feed["features"].shape[1] * HOP), float(index), np.float32)

    out = run_windowed(run, feed, plan, HOP)
    spans = plan.spans(200)
    boundary = spans[1][2] * HOP  # first sample the second window keeps
    overlap = out[boundary : boundary + plan.crossfade * HOP]
    assert np.all(np.diff(overlap) > 0) and 0 < overlap[0] < 0.1 and 0.9 < overlap[-1] < 1
    assert out[0] == 0 and out[-1] == len(spans) - 1


def test_slicing_keeps_per_sample_inputs_aligned_with_frames():
    feed = make_feed(20)
    part = slice_inputs(feed, 5, 9, HOP)
    assert part["features"].shape == (1, 4, 3) and part["prior_noise"].shape == (1, 2, 4)
    np.testing.assert_array_equal(part["excitation"], feed["excitation"][:, 20:36])
    assert part["speaker"] is feed["speaker"]


def test_a_window_without_room_to_keep_is_refused():
    with pytest.raises(ValueError):
        WindowPlan(frames=20, context=10, crossfade=4).validate()
