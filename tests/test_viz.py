import matplotlib

matplotlib.use("Agg")

import numpy as np
import torch
from PIL import Image

from facegen.viz import image_grid, plot_gpt_training, plot_vqvae_training, save_image_grid


def test_image_grid_places_each_image_with_white_padding():
    images = torch.stack([torch.full((3, 4, 4), -1.0), torch.full((3, 4, 4), 1.0), torch.zeros(3, 4, 4)])
    grid = np.asarray(image_grid(images, nrow=2, padding=2))
    assert grid.shape == (2 * (4 + 2) + 2, 2 * (4 + 2) + 2, 3)
    assert (grid[2:6, 2:6] == 0).all()  # -1 -> black
    assert (grid[2:6, 8:12] == 255).all()  # +1 -> white
    assert (grid[8:12, 2:6] == 128).all()  # 0 -> mid grey (127.5 rounds to 128)
    assert (grid[0, :] == 255).all()  # padding is white


def test_save_image_grid_writes_a_png_atomically(tmp_path):
    path = save_image_grid(torch.zeros(2, 3, 8, 8), tmp_path / "g" / "grid.png", nrow=2)
    assert Image.open(path).size == (2 * 10 + 2, 12)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]


def test_plot_vqvae_training_draws_the_given_values():
    history = [{"step": s, "recon": 1.0 / s, "vq": 0.1, "perplexity": 10.0 * s} for s in range(1, 5)]
    validation = [{"step": 2, "psnr": 20.0}, {"step": 4, "psnr": 25.0}]
    fig = plot_vqvae_training(history, validation)
    recon_line = fig.axes[0].lines[0]
    assert list(recon_line.get_ydata()) == [1.0, 0.5, 1 / 3, 0.25]
    assert list(fig.axes[1].lines[0].get_ydata()) == [10.0, 20.0, 30.0, 40.0]
    assert list(fig.axes[2].lines[0].get_xdata()) == [2, 4] and list(fig.axes[2].lines[0].get_ydata()) == [20.0, 25.0]


def test_plot_gpt_training_draws_losses_moving_average_and_baselines():
    history = [{"step": s, "loss": float(s % 2)} for s in range(1, 7)]  # 1, 0, 1, 0, 1, 0
    validation = [{"step": 3, "val_loss": 0.7}, {"step": 6, "val_loss": 0.4}]
    fig = plot_gpt_training(history, validation, {"unigram": 6.0, "ln K": 6.2}, smooth=2)
    raw, average, val, unigram, uniform = fig.axes[0].lines
    assert list(raw.get_ydata()) == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert list(average.get_xdata()) == [2, 3, 4, 5, 6] and list(average.get_ydata()) == [0.5] * 5
    assert list(val.get_ydata()) == [0.7, 0.4]
    assert list(unigram.get_ydata()) == [6.0, 6.0] and list(uniform.get_ydata()) == [6.2, 6.2]
    assert "unigram baseline (6.00)" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_plot_gpt_training_says_when_the_validation_points_score_the_weights_average():
    history = [{"step": s, "loss": 1.0} for s in range(1, 7)]
    validation = [{"step": 3, "val_loss": 0.7}, {"step": 6, "val_loss": 0.4, "last_step_val_loss": 0.45}]
    fig = plot_gpt_training(history, validation, smooth=2)
    *_, val, last = fig.axes[0].lines
    assert list(val.get_ydata()) == [0.7, 0.4] and list(last.get_xdata()) == [6] and list(last.get_ydata()) == [0.45]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[-2:] == ["validation, the weights' moving average", "validation, the last step's weights"]
    plain = plot_gpt_training(history, [{"step": 6, "val_loss": 0.4}], smooth=2)  # a run without averaging
    assert [t.get_text() for t in plain.axes[0].get_legend().get_texts()][-1] == "validation"
