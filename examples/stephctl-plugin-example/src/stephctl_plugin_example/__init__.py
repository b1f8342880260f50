"""An example stephctl plugin: one command, one encoder and one merge method.

Installed next to stephctl (``pip install ./stephctl-plugin-example`` or
``uv run --with ./stephctl-plugin-example stephctl ...``), it adds ``stephctl count-patches``,
the encoder ``color-histogram`` and the merge method ``cosine-topk``; ``stephctl plugins``
shows them with this package's name and version.
"""

__version__ = "0.1.0"
