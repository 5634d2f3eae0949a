"""``python -m fairseq_smallcap.prepare``: the same as ``smallcap-prepare``."""
import sys

from .cli import cli_main

if __name__ == "__main__":
    sys.exit(cli_main())
