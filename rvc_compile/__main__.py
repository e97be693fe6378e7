"""``python -m rvc_compile ...`` is ``rvc-compile ...``."""

from .cli import main

if __name__ == "__main__":
    main()
