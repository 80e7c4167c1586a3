"""What the timings were taken on: numbers mean little without the machine and versions."""
import importlib
import os
import platform
from datetime import datetime, timezone

import numpy as np


def import_optional(name):
    """The module, or None when it is not importable: the peers are optional, and without ml_dtypes
    (NumPy's bfloat16) the bfloat16 cases are skipped."""
    try:
        return importlib.import_module(name)
    except (ImportError, OSError):  # OSError: an install whose shared libraries fail to load
        return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def usable_cpu_count():
    """CPUs this process may run on; in a container that can be fewer than os.cpu_count()."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average():
    """1-minute load average, or None where the OS has none: on a shared machine, how busy the
    other cores were is part of what the timings mean."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def describe_machine(softmax_ce_c, **optional_modules):
    """Machine and versions as a dict; optional_modules are name=module, or name=None when that
    module is not importable (e.g. torch=None)."""
    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpu_count(),
        "load_average_1min": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        **{name: module.__version__ if module is not None else "not installed"
           for name, module in optional_modules.items()},
        "softmax_ce_c": softmax_ce_c.__version__,
        "softmax_ce_c_path": os.path.dirname(softmax_ce_c.__file__),
        "softmax_ce_c_instruction_set": softmax_ce_c.instruction_set(),
    }
