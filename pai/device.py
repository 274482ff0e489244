import torch

from pai.errors import PaiConfigError


def resolve_device(name: str) -> torch.device:
    """`device=auto|cpu|cuda[:i]` → a torch.device; a GPU asked for where there is none fails here, clearly."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PaiConfigError(f"device={name} but no CUDA GPU is available here; use device=cpu or device=auto")
        return torch.device(name)
    raise PaiConfigError(f"device={name!r} must be auto, cpu or cuda")
