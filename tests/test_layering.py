"""The dependency direction of HOUSE_STYLE.md section 4.2, checked by walking the imports."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def _violations(package: str, forbidden: tuple[str, ...], allowed=lambda name: False):
    found = []
    for path in _modules(package):
        for name in _imports(path):
            top = name.split(".")[0]
            if (top in forbidden or name in forbidden) and not allowed(name):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_library_never_imports_orchestration_or_analysis():
    assert _modules("switchkd")
    assert not _violations("switchkd", ("ray", "optuna", "pandas", "pyarrow", "sweeps",
                                        "search_spaces", "analysis"))


def test_losses_are_pure_tensor_code():
    names = _imports(ROOT / "switchkd" / "losses.py")
    assert not {n for n in names if n.startswith(("switchkd", "transformers"))}


def test_orchestration_uses_only_the_public_surface():
    public = ("switchkd.config", "switchkd.presets", "switchkd.train")

    def allowed(name: str) -> bool:
        return name == "switchkd" or any(name == p or name.startswith(p + ".") for p in public)

    if not (ROOT / "sweeps").exists():
        pytest.skip("sweeps/ not present")
    bad = _violations("sweeps", ("switchkd", "transformers"), allowed)
    assert not bad, bad


def test_analysis_is_free_of_torch_ray_and_the_library():
    if not (ROOT / "analysis").exists():
        pytest.skip("analysis/ not present")
    bad = _violations("analysis", ("torch", "ray", "switchkd", "transformers", "sweeps"))
    assert not bad, bad


def test_search_spaces_hold_no_code_that_computes():
    code = list((ROOT / "search_spaces").rglob("*.py")) if (ROOT / "search_spaces").exists() else []
    for path in code:
        assert not {n for n in _imports(path) if n.split(".")[0] in ("switchkd", "torch", "ray")}
