"""Comparison distillers (KD, CD, IFV, SKD, KA), one file each."""
