"""The dataset layouts a DAAD is built from, one file each (its source model and its reader),
registered in :mod:`cai_ray.daad.layouts.registry`."""
