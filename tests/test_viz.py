import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from bertcourse import viz  # noqa: E402

TOKENS = ["[CLS]", "the", "cat", "sat", "[SEP]"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_plot_attention_has_tokens_on_both_axes():
    probs = torch.softmax(torch.randn(5, 5), dim=-1)
    fig = viz.plot_attention(probs, TOKENS, title="head 0")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == TOKENS
    assert [t.get_text() for t in ax.get_yticklabels()] == TOKENS
    assert ax.get_title() == "head 0"
    assert ax.images[0].get_array().shape == (5, 5)
    assert len(fig.axes) == 2  # the heatmap and its colour bar


def test_plot_attention_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="one head"):
        viz.plot_attention(torch.rand(2, 5, 5), TOKENS)


def test_plot_attention_heads_one_panel_per_head():
    probs = torch.softmax(torch.randn(6, 5, 5), dim=-1)
    fig = viz.plot_attention_heads(probs, TOKENS, ncols=4, title="layer 0")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 6
    assert len(fig.axes) == 8  # 2 rows of 4, two panels switched off
    assert [t.get_text() for t in shown[5].get_xticklabels()] == TOKENS
    with pytest.raises(ValueError, match="pick one example"):
        viz.plot_attention_heads(torch.rand(1, 6, 5, 5))


def test_plot_scaling_draws_series_and_guide():
    fig = viz.plot_scaling([64, 128, 256], {"ours": [1.0, 4.1, 16.3]}, "time (ms)")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_xscale() == "log"
    assert ax.lines[1].get_ydata()[-1] == pytest.approx(16.3)


def test_plot_parameter_breakdown_labels():
    fig = viz.plot_parameter_breakdown({"embeddings": 3_000_000, "encoder": 7_000_000})
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == [" 3.00M (30.0%)", " 7.00M (70.0%)"]


def test_plot_scaling_labels_the_measured_lengths():
    fig = viz.plot_scaling([32, 64, 128, 256, 512], {"ours": [1, 2, 5, 20, 80]}, "time (ms)")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["32", "64", "128", "256", "512"]
    assert fig.axes[0].xaxis.get_minor_ticks() == []
