-- The targets the index builds for, in the order they are tried.
SELECT name, abi, platform, distro, paused
FROM targets
WHERE enabled
ORDER BY position, name;
