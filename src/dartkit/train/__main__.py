"""`python -m dartkit.train ...` runs `dartkit train`; this is the entry point for `accelerate launch -m`.

accelerate launch --config_file configs/accelerate/ddp.yaml -m dartkit.train --config my_train.yaml
"""

import typer

from dartkit.train.cli import train_command


def main() -> None:
    typer.run(train_command)


if __name__ == "__main__":
    main()
