"""The error for a user setting the package cannot use.

The package reads five environment variables: ``DIFFLAB_DEVICE``
(:mod:`difflab.runtime.device`), ``DIFFLAB_PROFILE`` (:mod:`difflab.runtime.profiles`),
``DIFFLAB_CACHE`` (:mod:`difflab.runtime.cache`), ``DIFFLAB_DATASET`` and
``DIFFLAB_DATA`` (:mod:`difflab.data`). A value that cannot work raises
:class:`SettingError` with one line naming the variable, the value and what is
allowed; the command line turns it into exit status 2, as for a bad flag.
"""

from __future__ import annotations


class SettingError(ValueError):
    """A setting (environment variable or flag) with a value that cannot be used.

    The message is one line: the setting, its value, and what is allowed.
    """
