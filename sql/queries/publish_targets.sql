-- Every target, enabled or retired, as the project pages need it (status.TargetInfo's fields; whether
-- one is paused is queue.json's business: it changes no page).
SELECT name, abi, platform, distro, position, enabled
FROM targets
ORDER BY position, name;
