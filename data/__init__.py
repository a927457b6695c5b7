"""Reference data shipped with the package: default targets, Pi OS Lite package lists, the missing-files map, the sample changelog."""
