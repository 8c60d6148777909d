"""`python -m dartkit.train ...` runs `dartkit train`; this is the entry point for `accelerate launch -m`.

accelerate launch --config_file configs/accelerate/ddp.yaml -m dartkit.train --config my_train.yaml
"""

import typer

from dartkit.train.cli import train_command


def main() -> None:
    # Plain click help, as `dartkit train --help` prints it (whole flag names at 80 columns).
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command()(train_command)
    app()


if __name__ == "__main__":
    main()
