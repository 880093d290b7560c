"""Figures are written whole: rendered beside their name, then renamed into place."""

from teachers.plots import save_loss_curve


def test_a_figure_is_a_png_under_its_own_name_with_no_temporary_file_left(tmp_path):
    path = save_loss_curve([{"step": s, "loss": 1.0 / s} for s in range(1, 20)], tmp_path / "plots" / "loss.png")
    assert path == tmp_path / "plots" / "loss.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["loss.png"]
