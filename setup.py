"""The optional compiled part of wavegate: the picows listener (Cython).

Everything else is in pyproject.toml. The extension is built when Cython, picows and a
C compiler are all at hand; otherwise the install still succeeds and the picows
transport runs picows' Python-facing connection instead (``wavegate.transports()``
says which one is active). ``WAVEGATE_NO_EXTENSIONS=1`` skips the build on purpose.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

SOURCE = "src/wavegate/transport/_picows_listener.pyx"


class OptionalBuildExt(build_ext):
    """build_ext that reports, rather than fails on, a missing compiler."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any build failure means "no extension"
            _skipped(exc)

    def build_extension(self, ext: object) -> None:
        try:
            super().build_extension(ext)  # type: ignore[arg-type]
        except Exception as exc:
            _skipped(exc)


def _skipped(exc: BaseException) -> None:
    print(
        f"wavegate: the compiled picows listener was not built ({exc}); "
        "the picows transport will use picows' Python-facing connection",
        file=sys.stderr,
    )


def _extensions() -> list[object]:
    if os.environ.get("WAVEGATE_NO_EXTENSIONS"):
        return []
    try:
        import picows
        from Cython.Build import cythonize
    except ImportError as exc:
        _skipped(exc)
        return []
    from setuptools import Extension

    extension = Extension(
        "wavegate.transport._picows_listener",
        [SOURCE],
        define_macros=[("WAVEGATE_PICOWS_VERSION", f'"{picows.__version__}"')],
    )
    try:
        return list(cythonize([extension], quiet=True, language_level=3))
    except Exception as exc:  # e.g. a picows without its .pxd files
        _skipped(exc)
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
