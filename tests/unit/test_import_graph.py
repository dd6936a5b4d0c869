"""The project's import graph has no cycles (STYLE.md 12): no two modules reach each other."""
import grimp

PACKAGES = ("rl", "rollout", "algorithms", "allocation", "envs")


def test_no_import_cycle_among_the_project_modules():
    g = grimp.build_graph(*PACKAGES)
    pairs = sorted({tuple(sorted((m, n))) for m in g.modules for n in g.find_modules_directly_imported_by(m)
                    if n != m and g.chain_exists(importer=n, imported=m)})
    assert pairs == [], f"modules that import each other (directly or through others): {pairs}"


def test_the_check_finds_a_cycle_when_there_is_one(tmp_path, monkeypatch):
    pkg = tmp_path / "cyc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from cyc import b\n")
    (pkg / "b.py").write_text("def f():\n    from cyc import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    g = grimp.build_graph("cyc")
    assert g.chain_exists(importer="cyc.a", imported="cyc.b") and g.chain_exists(importer="cyc.b", imported="cyc.a")
