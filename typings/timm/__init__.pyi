from typing import Any

from torch import nn

def create_model(model_name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module: ...
