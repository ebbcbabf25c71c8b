"""A text stream that says it is a terminal, to capture what tqdm draws on one."""

from __future__ import annotations

import io

from typing_extensions import override


class TerminalStream(io.StringIO):
    @override
    def isatty(self) -> bool:
        return True
