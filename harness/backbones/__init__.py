"""Segmentation backbones (Cylinder3D, MinkUNet, SPVCNN) behind one registry: ``BACKBONES``."""
