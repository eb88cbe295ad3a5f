"""The generic registry every extension point uses: decorator, aliases, duplicate refusal, one-line errors."""
import pytest

from bpm.errors import BpmError
from bpm.registry import Registry


def test_register_get_alias_and_choices_in_order():
    reg: Registry = Registry("widget", flag="--widget")

    @reg.register("b_widget", aliases=("bWidget",))
    def build_b():
        return "b"

    reg.add("a_widget", "a")
    assert reg.get("b_widget") is build_b and reg.get("bWidget") is build_b
    assert reg.canonical("bWidget") == "b_widget"
    assert reg.names() == ["b_widget", "a_widget"]
    assert reg.choices() == ["b_widget", "a_widget", "bWidget"]
    assert "bWidget" in reg and "c" not in reg and len(reg) == 2


def test_duplicate_name_or_alias_is_refused_naming_both_owners():
    reg: Registry = Registry("widget")
    reg.add("a", 1, module="pkg.first")
    with pytest.raises(BpmError, match=r"'a' of pkg\.second is already registered by pkg\.first"):
        reg.add("b", 2, aliases=("a",), module="pkg.second")
    assert reg.names() == ["a"]  # the refused entry left nothing behind


def test_unknown_name_is_one_line_naming_the_flag_and_choices():
    reg: Registry = Registry("widget", flag="--widget")
    reg.add("a", 1)
    with pytest.raises(BpmError) as err:
        reg.get("zzz")
    assert str(err.value) == "--widget: unknown widget 'zzz'; expected one of a"


def test_remove_forgets_name_and_aliases():
    reg: Registry = Registry("widget")
    reg.add("a", 1, aliases=("A",))
    reg.remove("A")
    assert "a" not in reg and "A" not in reg
    reg.add("a", 2)  # free again
    assert reg.get("a") == 2


def test_builtin_package_is_imported_on_first_lookup(tmp_path, monkeypatch):
    reg: Registry = Registry("widget", package="bpm_test_widgets_pkg")
    (tmp_path / "bpm_test_widgets_pkg.py").write_text(
        "from tests_registry_target import REG\nREG.add('builtin', 42)\n")
    (tmp_path / "tests_registry_target.py").write_text("REG = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import tests_registry_target
    tests_registry_target.REG = reg
    assert reg.names() == ["builtin"] and reg.get("builtin") == 42
