"""The one place DAAD layouts are registered: a layout is a source model (its ``layout`` name,
its fields, and :meth:`~cai_ray.daad.layouts.base.SourceBase.candidates`, its reader) in a file
of this package, listed here. The DAAD spec and the build use only this union and that hook, so
a spec naming any other layout is refused when it is read."""

from __future__ import annotations

from typing import Annotated, get_args

from pydantic import Field

from cai_ray.daad.layouts.base import SourceBase
from cai_ray.daad.layouts.coco import CocoSource
from cai_ray.daad.layouts.folder import FolderSource
from cai_ray.daad.layouts.labelme import LabelmeSource
from cai_ray.daad.layouts.mvtec import MvtecSource
from cai_ray.daad.layouts.yolo import YoloSource

Source = Annotated[
    FolderSource | MvtecSource | YoloSource | LabelmeSource | CocoSource,
    Field(discriminator="layout"),
]
"""One entry of a DAAD spec's ``sources``: one of the registered layouts, chosen by ``layout``."""

LAYOUTS: dict[str, type[SourceBase]] = {
    get_args(model.model_fields["layout"].annotation)[0]: model
    for model in get_args(get_args(Source)[0])
}
"""Each registered source model by its ``layout`` name."""
