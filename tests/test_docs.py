"""The README's Python examples stay valid code that uses only names the package exports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pyai_caching

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 8


def test_readme_examples_compile_and_import_real_names() -> None:
    for block in BLOCKS:
        tree = compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | ast.PyCF_ONLY_AST)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pyai_caching"):
                module = pyai_caching if node.module == "pyai_caching" else __import__(node.module, fromlist=["_"])
                for alias in node.names:
                    assert hasattr(module, alias.name), f"README imports {node.module}.{alias.name}, which does not exist"


def test_public_names_are_exported() -> None:
    for name in pyai_caching.__all__:
        assert hasattr(pyai_caching, name), name
