"""``python -m tunesmith.cli`` (how ``accelerate launch`` and ``torchrun`` start a training process)."""

from tunesmith.cli.app import main

main()
