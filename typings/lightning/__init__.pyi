from typing import Any

from torch import nn

class LightningModule(nn.Module):
    @property
    def current_epoch(self) -> int: ...

class Trainer:
    def __init__(self, **kwargs: Any) -> None: ...
    def fit(self, model: LightningModule, train_dataloaders: Any = None, val_dataloaders: Any = None) -> None: ...
