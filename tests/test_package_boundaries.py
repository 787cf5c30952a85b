"""Each service owns its domain: no service imports another service's package,
and ``libs/common`` imports none (they meet only on the broker, the database
and the admin API)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("ingress", "assistant", "delivery", "admin")
PACKAGES = {f"happ_{s}": ROOT / "services" / s / "src" / f"happ_{s}" for s in SERVICES} | {
    "happ_common": ROOT / "libs" / "common" / "src" / "happ_common"
}


def imported_packages(folder: Path) -> dict[str, set[str]]:
    """Top-level packages imported by each module below ``folder`` (relative
    imports stay inside the package)."""
    found: dict[str, set[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.partition(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.partition(".")[0])
        found[str(path.relative_to(folder))] = names
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_a_package_imports_no_service_but_itself(package: str) -> None:
    services = {p for p in PACKAGES if p != "happ_common"}
    modules = imported_packages(PACKAGES[package])
    assert modules, f"no module found for {package}"
    crossing = {
        module: sorted(names & (services - {package}))
        for module, names in modules.items()
        if names & (services - {package})
    }
    assert crossing == {}


def test_the_check_sees_an_import_across_services(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import happ_admin.app\nfrom happ_delivery import service\nfrom . import x\n")
    assert imported_packages(tmp_path) == {"m.py": {"happ_admin", "happ_delivery"}}
