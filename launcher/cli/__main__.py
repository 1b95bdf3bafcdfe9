"""`python -m launcher.cli COMMAND ...`: packrun's command line without the console script."""

from launcher.cli.main import main

main()
