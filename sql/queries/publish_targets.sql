-- Every target, enabled or retired, as the project pages need it (status.TargetInfo's fields).
SELECT name, abi, platform, distro, position, enabled, paused
FROM targets
ORDER BY position, name;
