"""Adapters to other libraries' interfaces, over :mod:`cai_ray.api`; each needs its own extra
and is imported only by its users."""
