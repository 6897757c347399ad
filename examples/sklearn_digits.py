"""The quickstart's training script: an MLP on scikit-learn's digits, one epoch per resource
unit, checkpointed (pickle) and resumed on promotion.

Under a worker agent:
    tuner worker --experiment 1 -- python examples/sklearn_digits.py
By hand (no agent), it trains a default configuration and prints its accuracy.

The code lives in the package (``tuner/quickstart/train_digits.py``) so that
``tuner quickstart`` works from any folder; this file runs it.
"""

import sys

from tuner.quickstart.train_digits import train_job

if __name__ == "__main__":
    sys.exit(train_job())
