from typing import Any

class RunHistory:
    def get_metric_values(self, metric_name: str) -> list[Any]: ...
