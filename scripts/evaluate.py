"""Same as `vtcc-eval`: python scripts/evaluate.py ckpt_path=<file>."""

from vtcc.evaluate import main

if __name__ == "__main__":
    main()
