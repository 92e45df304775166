"""Training objectives and their losses (SFT, DPO), run by Lightning.

Importing this package is cheap: sub-modules (``losses``, ``sft``, ``dpo``, ...) import ``torch`` and
``lightning`` themselves, on first use.
"""
