"""What one transports comparison measures: protocols, client counts, durations, where it writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torchserve_perf.tools.loadgen.protocols import PROTOCOLS, check

DEFAULT_PROTOCOLS = ("http", "grpc")
DEFAULT_CONCURRENCIES = (1, 4, 8)


@dataclass(frozen=True)
class TransportsConfig:
    protocols: tuple[str, ...]
    concurrencies: tuple[int, ...]
    seconds: float
    warmup: float
    out: Path
    work: Path  # the model store and the server's folder (logs); removed at the end unless something failed
    workloads: tuple[str, ...] = ("image", "tensor")
    quick: bool = False

    def __post_init__(self) -> None:
        if not self.protocols:
            raise ValueError(f"give at least one protocol ({', '.join(PROTOCOLS)})")
        for protocol in self.protocols:
            check(protocol)
        if len(set(self.protocols)) != len(self.protocols):
            raise ValueError(f"protocols repeat: {list(self.protocols)}")
        if not self.concurrencies or min(self.concurrencies) < 1:
            raise ValueError("concurrencies must be >= 1")
        if self.seconds <= 0 or self.warmup < 0:
            raise ValueError("seconds must be > 0 and warmup >= 0")
        unknown = sorted(set(self.workloads) - {"image", "tensor"})
        if unknown or not self.workloads:
            raise ValueError(f"unknown workloads {unknown}; choose from image, tensor")

    @property
    def needs_oip(self) -> bool:
        """The Open Inference Protocol's gRPC service is on only where a protocol uses it."""
        return "v2-grpc" in self.protocols
