"""The plotly builders: right traces, fixed colour ranges, hover text, offline report."""
import numpy as np

from recall_core import figures


def test_similarity_heatmap_fixed_range_and_labels():
    fig = figures.similarity_heatmap(np.array([[1, 0.5], [0.2, 1.0]]), ["a", "ref"], ["embed", "block_0"], "ref", "rbf")
    heat = fig.data[0]
    assert heat.zmin == 0 and heat.zmax == 1
    assert list(heat.y) == ["a", "ref"] and list(heat.x) == ["embed", "block_0"]
    assert heat.texttemplate  # small matrices carry values in cells
    big = figures.heatmap(np.zeros((30, 30)), [str(i) for i in range(30)], [str(i) for i in range(30)], "big")
    assert big.data[0].texttemplate is None


def test_scatter_groups_hover_and_typical_marks():
    coords = np.arange(12).reshape(6, 2).astype(float)
    texts = ["x" * 500, "b", "c", "d", "e", "f"]
    fig = figures.samples_scatter(coords, texts, ["t1", "t1", "t2", "t2", "t2", "t1"], typical=np.array([0, 3]))
    names = [t.name for t in fig.data]
    assert names == ["task t1", "task t2", "typical sample"]
    assert len(fig.data[0].x) == 3 and len(fig.data[2].x) == 2
    hover_text = fig.data[0].customdata[0][2]
    assert len(hover_text) == 200 and hover_text.endswith("…")


def test_schedule_area_stacks_to_one():
    w = np.array([[0.5, 0.5], [0.2, 0.8], [0, 1]])
    fig = figures.schedule_area(["embed", "block_0", "head"], ["a", "b"], w)
    assert [t.stackgroup for t in fig.data] == ["w", "w"]
    np.testing.assert_allclose(np.sum([t.y for t in fig.data], axis=0), 1)


def test_evaluation_bars_and_separability():
    fig = figures.evaluation_bars({"a": {"t1": 0.9, "t2": 0.1}, "merge": {"t1": 0.7, "t2": 0.6}}, sources=["a"])
    assert [t.name for t in fig.data] == ["a", "merge"] and fig.layout.barmode == "group"
    assert fig.data[0].marker.opacity < fig.data[1].marker.opacity
    line = figures.separability_line({"m": np.array([0.1, 0.5, np.nan])}, ["embed", "block_0", "block_1"])
    assert list(line.data[0].x) == ["embed", "block_0", "block_1"]


def test_report_is_self_contained():
    fig = figures.schedule_area(["embed", "head"], ["a"], np.ones((2, 1)))
    page = figures.report_html("R & D", [("fig", fig), ("fig2", fig), ("table", [{"k": 1.23456, "v": "<b>"}])])
    assert page.count("* plotly.js v") == 1  # the library inlined exactly once: opens offline
    assert '<script src=' not in page  # no external script
    assert "R &amp; D" in page and "1.2346" in page and "&lt;b&gt;" in page
