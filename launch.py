"""pai's command line in a checkout: `python launch.py [group=option ...] [key=value ...]`, `-m` to sweep, `--help`.

The same as the installed command `pai` (pai/cli.py); also the script that torchrun starts.
"""

from pai.cli import cli

if __name__ == "__main__":
    cli()
