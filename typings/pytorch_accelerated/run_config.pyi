from dataclasses import dataclass

@dataclass
class TrainerRunConfig:
    num_epochs: int
