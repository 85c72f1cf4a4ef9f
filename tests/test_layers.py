"""The data flow is one-way (DESIGN.md section 2): a layer imports only from layers below it."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "sslrecon"
RANK = {"errors": -1, "config": 0, "io": 1, "noise": 1, "data": 2, "physics": 2, "models": 2, "losses": 3,
        "engine": 4, "api": 5, "cli": 6, "__main__": 7}


def _layer(path: Path) -> str:
    rel = path.relative_to(PKG).parts
    return rel[0].removesuffix(".py")


def test_imports_point_down_the_layers():
    bad = []
    for path in PKG.rglob("*.py"):
        if path.parent == PKG and path.name == "__init__.py":
            continue
        layer = _layer(path)
        depth = len(path.relative_to(PKG).parts) - 1
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                up = node.level - depth  # levels above the package root reached by the relative import
                target = (node.module or "").split(".")[0] if up == 1 else layer
                if up == 1 and target and target in RANK and RANK[target] >= RANK[layer] and target != layer:
                    bad.append(f"{path.relative_to(PKG)} imports {target}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sslrecon."):
                target = node.module.split(".")[1]
                if RANK.get(target, -1) >= RANK[layer] and target != layer:
                    bad.append(f"{path.relative_to(PKG)} imports {target}")
    assert not bad, bad
