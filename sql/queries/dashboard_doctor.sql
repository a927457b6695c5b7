-- Each builder's last doctor report (migration 030): those with failing checks first.
SELECT builder, checked_at, received_at, ok, roles, checks
FROM builder_doctor
ORDER BY ok, builder;
