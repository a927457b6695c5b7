"""The targets file: read without a database, ordered numerically, mirrored into the catalog."""

from __future__ import annotations

import pytest

from support.build_world import TWO_TARGETS, add_build, add_release, use_targets
from wheelwright.errors import ConfigError
from wheelwright.builds.targets import abi_order, default_targets_path, load_targets, mirror_targets, parse_targets


def test_the_repository_targets_file_ships_pi_rows_and_this_machine():
    targets = load_targets(default_targets_path())
    rows = {(t.abi, t.platform, t.distro) for t in targets}
    assert {("cp311", "linux_armv7l", "bookworm"), ("cp313", "linux_aarch64", "trixie"),
            ("cp311", "linux_x86_64", "bookworm")} <= rows
    assert [t.name for t in targets if t.enabled] == ["cp311-x86_64", "cp311-armv7l", "cp313-aarch64"]
    assert {t.name: (t.arch, t.image) for t in targets} == {
        "cp311-x86_64": ("amd64", False), "cp311-armv7l": ("armhf", True), "cp313-aarch64": ("arm64", True)}


def test_a_target_s_debian_architecture_follows_from_its_platform_unless_given():
    [pi] = parse_targets('[[target]]\nabi = "cp311"\nplatform = "linux_armv7l"\ndistro = "bookworm"\n')
    assert (pi.arch, pi.image, pi.packages, pi.package_lists) == ("armhf", False, (), ("build-packages.txt",))
    [own] = parse_targets('[[target]]\nabi = "cp311"\nplatform = "linux_armv7l"\ndistro = "bookworm"\n'
                          'packages = ["libyaml-dev"]\npackage_lists = []\n')
    assert (own.packages, own.package_lists) == (("libyaml-dev",), ())
    with pytest.raises(ConfigError, match="built in armhf images, not arm64"):
        parse_targets('[[target]]\nabi = "cp311"\nplatform = "linux_armv7l"\ndistro = "bookworm"\n'
                      'arch = "arm64"\n')
    with pytest.raises(ConfigError, match="packages must be a list of strings"):
        parse_targets('[[target]]\nabi = "cp311"\nplatform = "linux_armv7l"\ndistro = "bookworm"\n'
                      'packages = "libyaml-dev"\n')


def test_abis_sort_numerically_not_as_text():
    assert sorted(["cp313", "cp39", "cp311", "cp310"], key=abi_order) == ["cp39", "cp310", "cp311", "cp313"]


def test_targets_come_in_numeric_abi_order_and_file_order_breaks_ties():
    targets = parse_targets("""
        [[target]]
        abi = "cp313"
        platform = "linux_aarch64"
        distro = "trixie"
        [[target]]
        abi = "cp39"
        platform = "linux_armv7l"
        distro = "bullseye"
        [[target]]
        abi = "cp311"
        platform = "linux_x86_64"
        distro = "bookworm"
        [[target]]
        abi = "cp311"
        platform = "linux_armv7l"
        distro = "bookworm"
    """)
    assert [(t.position, t.name) for t in targets] == [
        (1, "cp39-linux_armv7l"), (2, "cp311-linux_x86_64"), (3, "cp311-linux_armv7l"),
        (4, "cp313-linux_aarch64")]


def test_the_queue_defaults_to_the_target_name():
    target = parse_targets('[[target]]\nname = "pi"\nabi = "cp311"\nplatform = "linux_armv7l"\n'
                           'distro = "bookworm"\n')[0]
    assert (target.queue, target.enabled) == ("pi", True)


@pytest.mark.parametrize("text, complaint", [
    ('[[target]]\nabi = "cp311"\nplatform = "linux_armv7l"\n', "distro"),
    ('[[target]]\nabi = "py3"\nplatform = "x"\ndistro = "bookworm"\n', "ABI tag"),
    ('[[target]]\nabi = "cp311"\nplatform = "linux armv7l"\ndistro = "bookworm"\n', "platform tag"),
    ('[[target]]\nabi = "cp311"\nplatform = "linux_armv7l"\ndistro = "bookworm"\nqueue = "a b"\n', "queue"),
    ('[[target]]\nabi = "cp311"\nplatform = "linux_armv7l"\ndistro = "bookworm"\nenable = true\n',
     "unknown key"),
    ('[[target]]\nabi = "cp311"\nplatform = "linux_armv7l"\ndistro = "bookworm"\n'
     '[[target]]\nabi = "cp311"\nplatform = "linux_armv7l"\ndistro = "bullseye"\nname = "other"\n',
     "same file names"),
    ('[[target]]\nname = "a"\nabi = "cp311"\nplatform = "linux_armv7l"\ndistro = "bookworm"\n'
     '[[target]]\nname = "b"\nqueue = "a"\nabi = "cp313"\nplatform = "linux_armv7l"\ndistro = "trixie"\n',
     "share the queue"),
    ("[[target]\n", "not valid TOML"),
])
def test_a_bad_targets_file_is_refused_with_the_reason(text, complaint):
    with pytest.raises(ConfigError, match=complaint):
        parse_targets(text)


def test_mirroring_writes_the_file_into_the_catalog(catalog):
    use_targets(catalog)
    rows = catalog.execute("SELECT name, abi, platform, distro, enabled, position, queue FROM targets "
                           "ORDER BY position").fetchall()
    assert rows == [("cp39-armv7l", "cp39", "linux_armv7l", "bullseye", True, 1, "cp39-armv7l"),
                    ("cp311-armv7l", "cp311", "linux_armv7l", "bookworm", True, 2, "cp311-armv7l")]


def test_a_target_dropped_from_the_file_is_retired_and_keeps_its_wheels(catalog):
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    add_build(catalog, "foo", "1.0", "cp39-armv7l", "success",
              wheels=("foo-1.0-cp39-cp39-linux_armv7l.whl",))
    only_the_second = TWO_TARGETS[TWO_TARGETS.index("[[target]]", 10):]
    assert "cp39" not in only_the_second
    use_targets(catalog, only_the_second)
    assert catalog.execute("SELECT name, enabled FROM targets ORDER BY name").fetchall() == [
        ("cp311-armv7l", True), ("cp39-armv7l", False)]
    assert catalog.execute("SELECT count(*) FROM wheels").fetchone()[0] == 1


def test_mirroring_twice_changes_nothing(catalog):
    use_targets(catalog)
    before = catalog.execute("SELECT xmin::text, name FROM targets ORDER BY name").fetchall()
    use_targets(catalog)
    assert catalog.execute("SELECT xmin::text, name FROM targets ORDER BY name").fetchall() == before


def test_a_target_that_built_cannot_change_its_tags(catalog):
    use_targets(catalog)
    add_release(catalog, "foo", "1.0")
    add_build(catalog, "foo", "1.0", "cp39-armv7l", "failure")
    changed = TWO_TARGETS.replace('platform = "linux_armv7l"\ndistro = "bullseye"',
                                  'platform = "linux_aarch64"\ndistro = "bullseye"')
    with pytest.raises(ConfigError, match="cannot change"):
        mirror_targets(catalog, parse_targets(changed))
    assert catalog.execute("SELECT platform FROM targets WHERE name = 'cp39-armv7l'").fetchone() == (
        "linux_armv7l",)
