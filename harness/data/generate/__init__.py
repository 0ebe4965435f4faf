"""Realistic synthetic LiDAR data in the SemanticKITTI and nuScenes-lidarseg on-disk formats.

One scene model (:mod:`.scene`) and one vectorised ray caster (:mod:`.raycast`) serve both
writers (:mod:`.semantickitti`, :mod:`.nuscenes`); see docs/readings.md#synthetic-data. Entry points:

* :func:`generate_semantickitti` -- ``out/sequences/NN/{velodyne,labels,calib.txt,poses.txt,times.txt}``
* :func:`generate_nuscenes` -- ``out/{samples,sweeps,lidarseg,maps,v1.0-mini}`` loadable by nuscenes-devkit
"""
from harness.data.generate.nuscenes import generate_nuscenes
from harness.data.generate.semantickitti import generate_semantickitti

__all__ = ["generate_nuscenes", "generate_semantickitti"]
