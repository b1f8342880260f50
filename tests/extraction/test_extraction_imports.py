"""Reading feature files does not import the slide side of extraction (readers, tissue, scipy)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_merge_imports_no_slide_code_and_the_package_still_exports_it() -> None:
    code = (
        "import sys\n"
        "import steph.pipeline.merge, steph.bundles.sources, steph.extraction\n"
        "print('steph.extraction.slide_job' in sys.modules, 'steph.slides' in sys.modules,\n"
        "      'scipy.ndimage' in sys.modules)\n"
        "from steph.extraction import SlideOutcome, extract_slide\n"
        "from steph.extraction.slide_job import extract_slide as direct\n"
        "print(extract_slide is direct, SlideOutcome.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False", "True", "SlideOutcome"]


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    import steph.extraction

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = steph.extraction.nope  # type: ignore[attr-defined]
