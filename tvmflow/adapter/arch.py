"""CPU architectures, one name each: of a target triple, of a compiled library's ELF header."""

from __future__ import annotations

import struct
from pathlib import Path

# ELF e_machine values
_ELF_MACHINES = {3: "i386", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64", 21: "ppc64"}
_ARCH_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64", "armv7l": "arm",
                 "armv7": "arm", "armv8": "aarch64"}


def normalize_arch(name: str | None) -> str | None:
    if not name:
        return None
    name = name.lower()
    return _ARCH_ALIASES.get(name, name)


def triple_arch(triple: str | None) -> str | None:
    """``"aarch64-linux-gnu"`` -> ``"aarch64"``."""
    return normalize_arch(triple.split("-", 1)[0]) if triple else None


def elf_arch(path: str | Path) -> str | None:
    """The CPU architecture a shared library was built for (from its ELF header)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    endian = "<" if head[5] == 1 else ">"
    machine = struct.unpack(endian + "H", head[18:20])[0]
    return _ELF_MACHINES.get(machine, f"elf-machine-{machine}")
