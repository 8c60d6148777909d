"""Progress is readable in a log file while a step runs, and a long model name cannot squash the bar."""

from __future__ import annotations

import io

from rich.console import Console

from dartkit.progress import progress_bar, shorten


def test_log_file_gets_plain_lines_while_the_step_runs():
    log = io.StringIO()
    now = [0.0]
    with progress_bar(Console(file=log, force_terminal=False, width=80)) as progress:
        progress.clock = lambda: now[0]  # a fake clock: the test does not wait
        task = progress.add_task("baseline answers (embedded)", total=100)
        assert log.getvalue().splitlines() == ["baseline answers (embedded): 0/100 (0%), 0:00:00 elapsed"]
        progress.advance(task, 10)  # at once: no new line
        now[0] = 6.0
        progress.advance(task, 20)
        lines = log.getvalue().splitlines()
        assert len(lines) == 2 and lines[1].startswith("baseline answers (embedded): 30/100 (30%), 0:00:06")
        assert "about 0:00:14 left" in lines[1]  # 70 left at 30 per 6 s
        now[0] = 20.0
        progress.advance(task, 70)
    assert log.getvalue().splitlines()[-1] == "baseline answers (embedded): 100/100 (100%), done in 0:00:20"
    assert "\x1b" not in log.getvalue() and "━" not in log.getvalue()


def test_training_loss_appears_in_plain_lines():
    log = io.StringIO()
    with progress_bar(Console(file=log, force_terminal=False), extra="loss {task.fields[loss]:.4f}") as p:
        task = p.add_task("training", total=2, completed=0, loss=float("nan"))
        p.update(task, advance=2, loss=1.25)
    lines = log.getvalue().splitlines()
    assert lines[-1].endswith("(100%), done in 0:00:00, loss 1.2500")
    assert "nan" not in lines[0]  # no loss before the first step: left out, not "loss nan"


def test_long_model_name_does_not_squash_the_bar_at_80_columns():
    screen = Console(file=io.StringIO(), width=80, force_terminal=True, record=True)
    progress = progress_bar(screen)
    spec = "hf:meta-llama/Meta-Llama-3-8B-Instruct+adapter=runs/paper-setup/distill/train/adapter"
    task = progress.add_task(f"candidate answers ({spec})", total=1624)
    progress.advance(task, 300)
    screen.print(progress.get_renderable())
    line = screen.export_text().splitlines()[0]
    assert len(line) <= 80
    assert "300/1624" in line
    assert sum(line.count(c) for c in "━╸╺") >= 20, line  # the whole bar is drawn
    assert line.startswith("candidate answers (") and "…" in line and "/adapter)" in line


def test_shorten_keeps_both_ends():
    assert shorten("short", 10) == "short"
    cut = shorten("baseline answers (hf:org/model+adapter=runs/x/adapter)", 30)
    assert len(cut) == 30 and cut.startswith("baseline answers") and cut.endswith("/adapter)")
