"""Transport tests share the distribution tests' fixtures (registries, images)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_ocibox_tests_distribution_conftest",
                                               Path(__file__).parents[1] / "distribution" / "conftest.py")
_dist = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _dist
_spec.loader.exec_module(_dist)

need = _dist.need
run = _dist.run
ocibox_cmd = _dist.ocibox_cmd
free_port = _dist.free_port
start_docker_registry = _dist.start_docker_registry
start_ocibox_registry = _dist.start_ocibox_registry
stop = _dist.stop
ocibox_registry = _dist.ocibox_registry
docker_registry = _dist.docker_registry
any_registry = _dist.any_registry
image_layout = _dist.image_layout
no_auth_files = _dist.no_auth_files
