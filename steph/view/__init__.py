"""``stephctl view``: a read-only web page on the loopback interface for one target's test patients.

Deep-zoom slides (``openslide.deepzoom`` tiles shown by OpenSeadragon, shipped in
``static/openseadragon/``), the attention of any method's model as an overlay aligned with the
patch grid, the most attended patches, STEPH's transfer and the methods side by side.
"""

from __future__ import annotations

from .data import ProjectView
from .server import ViewServer, serve

OPENSEADRAGON_VERSION = "6.1.1"

__all__ = ["OPENSEADRAGON_VERSION", "ProjectView", "ViewServer", "serve"]
