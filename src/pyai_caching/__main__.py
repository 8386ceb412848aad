"""`python -m pyai_caching`: the `pyai-caching` command line."""

from ._cli import main

if __name__ == "__main__":
    main()
